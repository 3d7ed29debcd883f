//! From configuration to live parts: a partner's endpoint URL becomes an
//! [`Endpoint`], and `[ecm]` becomes an [`AnyRepository`].
//!
//! Nothing here opens a network connection: endpoints and the Content Server
//! client connect on their first operation. Secrets (passwords, passphrases)
//! are read now, from the environment variable or file the configuration
//! names, so a missing one fails at start-up. Error messages name the partner
//! (or `ecm`) and the setting, never a secret.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail, ensure};
use url::{Host, Url};
use wharf_ecm::embedded::Embedded;
use wharf_ecm::otcs::{Mapping, OtcsClient, Secret};
use wharf_ecm::{
    AuditEvent, AuditRecord, ByteStream, Category, ContentSource, Grant, HashedDownload,
    NewDocument, Node, NodeId, Repository, SearchQuery, Stored, Version, WorkflowId, WorkflowStart,
    WorkspaceSpec,
};
use wharf_endpoint::ftp::{FtpConfig, FtpEndpoint, FtpSecurity};
use wharf_endpoint::local::LocalEndpoint;
use wharf_endpoint::sftp::{SftpAuth, SftpConfig, SftpEndpoint};
use wharf_endpoint::{Endpoint, SecretSource, TempNaming};

use crate::config::{self, EcmConfig, PartnerConfig, WharfConfig};
use crate::flow::filing::{PROVENANCE_CATEGORY, Provenance};

/// The attribute of [`PROVENANCE_CATEGORY`] holding a document's SHA-256: the
/// Content Server client reads it to recognise a document already stored by
/// an earlier attempt.
const CHECKSUM_ATTRIBUTE: &str = "SHA-256";

/// The endpoint of partner `p`, from its `endpoint` URL and settings.
///
/// | URL | endpoint |
/// |---|---|
/// | `ftp://user@host[:port]/root` | FTP without TLS (port 21) |
/// | `ftps://user@host[:port]/root` | explicit FTPS, `AUTH TLS` (port 21) |
/// | `ftps-implicit://user@host[:port]/root` | implicit FTPS (port 990) |
/// | `sftp://user@host[:port]/root` | SFTP (port 22) |
/// | `file:///absolute/folder` | a local folder |
///
/// The URL's path (percent-decoded, `/` when empty) is the partner root on
/// the server. FTP logs in with the password from `password_env` or
/// `password_file`; SFTP with the key in `key_file` (its passphrase from
/// `passphrase_env` / `passphrase_file`) when one is set, else with the
/// password, and verifies the host key against `host_key` and
/// `known_hosts`. `ca_file` is the CA trusted for FTPS, `server_timezone`
/// the offset of FTP listing times, `max_connections` the connection limit.
///
/// `state_dir` is the runtime's state directory; no endpoint keeps state
/// there yet.
///
/// Nothing is connected yet; secrets, keys and CA files are read now.
pub fn endpoint_for(p: &PartnerConfig, state_dir: &Path) -> anyhow::Result<Arc<dyn Endpoint>> {
    let _ = state_dir;
    build_endpoint(p).with_context(|| format!("partner {}", p.id))
}

fn build_endpoint(p: &PartnerConfig) -> anyhow::Result<Arc<dyn Endpoint>> {
    let url = endpoint_url(p)?;
    Ok(match url.scheme() {
        "ftp" | "ftps" | "ftps-implicit" => Arc::new(FtpEndpoint::new(ftp_config(p, &url)?)?),
        "sftp" => Arc::new(SftpEndpoint::new(sftp_config(p, &url)?)?),
        "file" => {
            warn_remote_settings(p);
            let folder = url.to_file_path().map_err(|()| {
                anyhow!(
                    "a file endpoint must name an absolute local folder, as in file:///srv/drop"
                )
            })?;
            Arc::new(LocalEndpoint::open(folder, TempNaming::default())?)
        }
        other => {
            bail!("endpoint scheme {other:?} is not one of ftp, ftps, ftps-implicit, sftp, file")
        }
    })
}

/// The partner's endpoint URL, parsed and checked for what no scheme allows.
fn endpoint_url(p: &PartnerConfig) -> anyhow::Result<Url> {
    // The parser's message never repeats the URL, which could hold a password.
    let url = Url::parse(&p.endpoint).map_err(|e| anyhow!("endpoint is not a URL: {e}"))?;
    ensure!(
        url.password().is_none(),
        "the endpoint URL must not contain a password; use password_env or password_file"
    );
    ensure!(
        url.query().is_none() && url.fragment().is_none(),
        "the endpoint URL has a query or fragment; write '?' as %3F and '#' as %23 in the root folder"
    );
    Ok(url)
}

/// Host, port, user and root of an `ftp`/`ftps`/`sftp` URL.
struct Server {
    host: String,
    port: u16,
    user: String,
    root: String,
}

fn server(url: &Url, default_port: u16) -> anyhow::Result<Server> {
    let host = match url.host() {
        Some(Host::Domain(d)) => decode(d, "host")?,
        Some(Host::Ipv4(a)) => a.to_string(),
        Some(Host::Ipv6(a)) => a.to_string(),
        None => String::new(),
    };
    ensure!(!host.is_empty(), "the endpoint URL names no host");
    let user = decode(url.username(), "user")?;
    ensure!(
        !user.is_empty(),
        "the endpoint URL names no user ({}://user@host/...)",
        url.scheme()
    );
    let root = decode(url.path(), "root folder")?;
    let root = if root.is_empty() { "/".into() } else { root };
    Ok(Server {
        host,
        port: url.port().unwrap_or(default_port),
        user,
        root,
    })
}

/// Percent-decodes one part of the URL; control characters could end an
/// FTP command early and are refused.
fn decode(raw: &str, what: &str) -> anyhow::Result<String> {
    let text = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| anyhow!("the endpoint URL's {what} is not UTF-8 once percent-decoded"))?;
    ensure!(
        !text.chars().any(char::is_control),
        "the endpoint URL's {what} contains a control character"
    );
    Ok(text.into_owned())
}

/// Where a secret comes from: the `*_env` or the `*_file` setting, not both.
fn secret_source(
    env: &Option<String>,
    file: &Option<PathBuf>,
    what: &str,
) -> anyhow::Result<Option<SecretSource>> {
    match (env, file) {
        (Some(_), Some(_)) => bail!("set {what}_env or {what}_file, not both"),
        (Some(var), None) => Ok(Some(SecretSource::Env(var.clone()))),
        (None, Some(path)) => Ok(Some(SecretSource::File(path.clone()))),
        (None, None) => Ok(None),
    }
}

fn common(p: &PartnerConfig) -> wharf_endpoint::CommonConfig {
    wharf_endpoint::CommonConfig {
        max_connections: usize::try_from(p.max_connections.max(1)).unwrap_or(usize::MAX),
        ..Default::default()
    }
}

fn ftp_config(p: &PartnerConfig, url: &Url) -> anyhow::Result<FtpConfig> {
    let (security, default_port) = match url.scheme() {
        "ftp" => (FtpSecurity::Plain, 21),
        "ftps" => (FtpSecurity::Explicit, 21),
        _ => (FtpSecurity::Implicit, 990),
    };
    let s = server(url, default_port)?;
    if p.key_file.is_some()
        || p.passphrase_env.is_some()
        || p.passphrase_file.is_some()
        || p.host_key.is_some()
        || p.known_hosts.is_some()
    {
        bail!(
            "SSH settings (key_file, passphrase_*, host_key, known_hosts) do not apply to an FTP endpoint"
        );
    }
    let password = secret_source(&p.password_env, &p.password_file, "password")?
        .ok_or_else(|| anyhow!("an FTP endpoint needs password_env or password_file"))?;
    if security == FtpSecurity::Plain && p.ca_file.is_some() {
        tracing::warn!(
            partner = %p.id,
            "ca_file is not used by a plain ftp:// endpoint; use ftps:// for TLS"
        );
    }
    let offset = match &p.server_timezone {
        Some(tz) => config::parse_offset(tz)
            .ok_or_else(|| anyhow!("server_timezone {tz:?} is not an offset like +01:00"))?,
        None => 0,
    };
    let mut c = FtpConfig::new(s.host, s.port, s.user, password);
    c.root = s.root;
    c.security = security;
    c.tls.ca_file = p.ca_file.clone();
    c.server_utc_offset_minutes = offset / 60;
    c.common = common(p);
    Ok(c)
}

fn sftp_config(p: &PartnerConfig, url: &Url) -> anyhow::Result<SftpConfig> {
    let s = server(url, 22)?;
    let password = secret_source(&p.password_env, &p.password_file, "password")?;
    let passphrase = secret_source(&p.passphrase_env, &p.passphrase_file, "passphrase")?;
    let auth = match (&p.key_file, password) {
        (Some(path), password) => {
            if password.is_some() {
                tracing::warn!(partner = %p.id, "key_file is set: the password is not used");
            }
            SftpAuth::Key {
                path: path.clone(),
                passphrase,
            }
        }
        (None, Some(password)) => {
            ensure!(
                passphrase.is_none(),
                "passphrase_env / passphrase_file need a key_file"
            );
            SftpAuth::Password(password)
        }
        (None, None) => bail!("an SFTP endpoint needs key_file, password_env or password_file"),
    };
    for (set, name) in [
        (p.ca_file.is_some(), "ca_file"),
        (p.server_timezone.is_some(), "server_timezone"),
    ] {
        if set {
            tracing::warn!(partner = %p.id, "{name} is not used by an sftp:// endpoint");
        }
    }
    let mut c = SftpConfig::new(s.host, s.port, s.user, auth);
    c.host_keys = p.host_key.iter().cloned().collect();
    c.known_hosts = p.known_hosts.clone();
    c.root = s.root;
    c.common = common(p);
    Ok(c)
}

/// A local folder has no login, host key or TLS: such settings are not used.
fn warn_remote_settings(p: &PartnerConfig) {
    for (set, name) in [
        (p.password_env.is_some(), "password_env"),
        (p.password_file.is_some(), "password_file"),
        (p.key_file.is_some(), "key_file"),
        (p.passphrase_env.is_some(), "passphrase_env"),
        (p.passphrase_file.is_some(), "passphrase_file"),
        (p.host_key.is_some(), "host_key"),
        (p.known_hosts.is_some(), "known_hosts"),
        (p.ca_file.is_some(), "ca_file"),
        (p.server_timezone.is_some(), "server_timezone"),
    ] {
        if set {
            tracing::warn!(partner = %p.id, "{name} is not used by a file:// endpoint");
        }
    }
}

/// The configured repository: the embedded store or a Content Server.
pub enum AnyRepository {
    /// The embedded store under `runtime.state_dir/ecm`.
    Embedded(Embedded),
    /// An OpenText Content Server.
    Otcs(OtcsClient),
}

/// Opens the repository `[ecm]` names.
///
/// The embedded store lives in `runtime.state_dir/ecm`; opening it
/// reconciles blobs with metadata, and anything that found is logged. For a
/// Content Server the password comes from `password_env` / `password_file`,
/// `ca_file` is trusted besides the public roots, and `mapping_file` maps
/// names to server ids; it must map the category every filed document
/// carries (`wharf Transfer`) with all its attributes. No request is made
/// until the first operation.
pub async fn open_repository(cfg: &WharfConfig) -> anyhow::Result<AnyRepository> {
    match &cfg.ecm {
        EcmConfig::Embedded => {
            let dir = cfg.runtime.state_dir.join("ecm");
            let (repo, found) = Embedded::open(&dir)
                .await
                .with_context(|| format!("opening the embedded repository in {}", dir.display()))?;
            if !found.missing_blobs.is_empty() {
                tracing::error!(
                    dir = %dir.display(),
                    missing_blobs = ?found.missing_blobs,
                    "the embedded repository references content that is missing"
                );
            }
            if found.orphan_blobs_removed > 0 || found.temp_files_removed > 0 {
                tracing::info!(
                    dir = %dir.display(),
                    orphan_blobs_removed = found.orphan_blobs_removed,
                    temp_files_removed = found.temp_files_removed,
                    "embedded repository reconciled"
                );
            }
            Ok(AnyRepository::Embedded(repo))
        }
        EcmConfig::Otcs(o) => Ok(AnyRepository::Otcs(open_otcs(o).context("ecm")?)),
    }
}

fn open_otcs(o: &config::OtcsConfig) -> anyhow::Result<OtcsClient> {
    let password = match (&o.password_env, &o.password_file) {
        (Some(_), Some(_)) => bail!("set password_env or password_file, not both"),
        (Some(var), None) => Secret::from_env(var)?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading password_file {}", path.display()))?;
            Secret::new(text.trim_end_matches(['\r', '\n']))
        }
        (None, None) => bail!("set password_env or password_file"),
    };
    let mapping = match &o.mapping_file {
        Some(path) => read_mapping(path)?,
        None => Mapping::default(),
    };
    let missing = missing_provenance(&mapping);
    if !missing.is_empty() {
        let from = match &o.mapping_file {
            Some(path) => format!("mapping_file {}", path.display()),
            None => "no mapping_file is set, so".into(),
        };
        bail!(
            "{from} does not map {}; every filed document carries them",
            missing.join(", ")
        );
    }
    let ca_pem = match &o.ca_file {
        Some(path) => Some(
            std::fs::read(path).with_context(|| format!("reading ca_file {}", path.display()))?,
        ),
        None => None,
    };
    let mut c = wharf_ecm::otcs::OtcsConfig::new(&o.url, &o.user, password);
    c.mapping = mapping;
    c.checksum_attribute = Some((PROVENANCE_CATEGORY.into(), CHECKSUM_ATTRIBUTE.into()));
    c.ca_pem = ca_pem;
    Ok(OtcsClient::new(c)?)
}

fn read_mapping(path: &Path) -> anyhow::Result<Mapping> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading mapping_file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("mapping_file {}", path.display()))
}

/// The parts of the provenance category (as `category` or
/// `category/attribute`) that `mapping` lacks.
fn missing_provenance(mapping: &Mapping) -> Vec<String> {
    let standard = Provenance {
        partner: String::new(),
        source_path: String::new(),
        received: std::time::SystemTime::UNIX_EPOCH,
        sha256: String::new(),
        size: 0,
        plugin: String::new(),
        plugin_version: String::new(),
        plugin_digest: String::new(),
    }
    .category();
    let Some(ids) = mapping.categories.get(&standard.name) else {
        return vec![format!("category {:?}", standard.name)];
    };
    standard
        .attributes
        .iter()
        .filter(|a| !ids.attributes.contains_key(&a.name))
        .map(|a| format!("attribute {:?} of category {:?}", a.name, standard.name))
        .collect()
}

/// Runs the same expression on whichever repository `self` holds.
macro_rules! each {
    ($self:ident, $r:ident => $e:expr) => {
        match $self {
            AnyRepository::Embedded($r) => $e,
            AnyRepository::Otcs($r) => $e,
        }
    };
}

impl AnyRepository {
    /// Checkpoint the embedded store (see [`Embedded::checkpoint`]); a
    /// Content Server has nothing to checkpoint here.
    pub async fn checkpoint(&self) -> wharf_ecm::Result<bool> {
        match self {
            AnyRepository::Embedded(e) => e.checkpoint().await,
            AnyRepository::Otcs(_) => Ok(true),
        }
    }
}

impl Repository for AnyRepository {
    async fn ensure_folder(&self, parent: NodeId, path: &[String]) -> wharf_ecm::Result<NodeId> {
        each!(self, r => r.ensure_folder(parent, path).await)
    }

    async fn create_workspace(
        &self,
        parent: NodeId,
        spec: &WorkspaceSpec,
    ) -> wharf_ecm::Result<NodeId> {
        each!(self, r => r.create_workspace(parent, spec).await)
    }

    async fn find_workspace(
        &self,
        workspace_type: &str,
        business_id: &str,
    ) -> wharf_ecm::Result<Option<Node>> {
        each!(self, r => r.find_workspace(workspace_type, business_id).await)
    }

    async fn store_document(
        &self,
        doc: &NewDocument,
        content: &dyn ContentSource,
    ) -> wharf_ecm::Result<Stored> {
        each!(self, r => r.store_document(doc, content).await)
    }

    async fn store_document_recorded(
        &self,
        doc: &NewDocument,
        content: &dyn ContentSource,
        event: &AuditEvent,
    ) -> wharf_ecm::Result<Stored> {
        each!(self, r => r.store_document_recorded(doc, content, event).await)
    }

    async fn set_categories(&self, node: NodeId, categories: &[Category]) -> wharf_ecm::Result<()> {
        each!(self, r => r.set_categories(node, categories).await)
    }

    async fn categories(&self, node: NodeId) -> wharf_ecm::Result<Vec<Category>> {
        each!(self, r => r.categories(node).await)
    }

    async fn set_permissions(&self, node: NodeId, grants: &[Grant]) -> wharf_ecm::Result<()> {
        each!(self, r => r.set_permissions(node, grants).await)
    }

    async fn permissions(&self, node: NodeId) -> wharf_ecm::Result<Vec<Grant>> {
        each!(self, r => r.permissions(node).await)
    }

    async fn classify(&self, node: NodeId, rm_class: &str) -> wharf_ecm::Result<()> {
        each!(self, r => r.classify(node, rm_class).await)
    }

    async fn apply_hold(&self, node: NodeId, hold: &str) -> wharf_ecm::Result<()> {
        each!(self, r => r.apply_hold(node, hold).await)
    }

    async fn start_workflow(&self, request: &WorkflowStart) -> wharf_ecm::Result<WorkflowId> {
        each!(self, r => r.start_workflow(request).await)
    }

    async fn search(&self, query: &SearchQuery) -> wharf_ecm::Result<Vec<Node>> {
        each!(self, r => r.search(query).await)
    }

    async fn download(&self, node: NodeId, version: Option<u32>) -> wharf_ecm::Result<ByteStream> {
        each!(self, r => r.download(node, version).await)
    }

    async fn download_hashed(
        &self,
        node: NodeId,
        version: Option<u32>,
    ) -> wharf_ecm::Result<HashedDownload> {
        each!(self, r => r.download_hashed(node, version).await)
    }

    async fn node(&self, node: NodeId) -> wharf_ecm::Result<Node> {
        each!(self, r => r.node(node).await)
    }

    async fn versions(&self, node: NodeId) -> wharf_ecm::Result<Vec<Version>> {
        each!(self, r => r.versions(node).await)
    }

    async fn children(&self, node: NodeId) -> wharf_ecm::Result<Vec<Node>> {
        each!(self, r => r.children(node).await)
    }

    async fn delete(&self, node: NodeId) -> wharf_ecm::Result<()> {
        each!(self, r => r.delete(node).await)
    }

    async fn record_event(&self, event: &AuditEvent) -> wharf_ecm::Result<()> {
        each!(self, r => r.record_event(event).await)
    }

    async fn record_events(&self, events: &[wharf_ecm::KeyedEvent]) -> wharf_ecm::Result<()> {
        each!(self, r => r.record_events(events).await)
    }

    async fn audit(&self, node: Option<NodeId>) -> wharf_ecm::Result<Vec<AuditRecord>> {
        each!(self, r => r.audit(node).await)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use bytes::Bytes;
    use sha2::{Digest, Sha256};
    use wharf_ecm::facade::{Facade, FacadeConfig};
    use wharf_ecm::otcs::CategoryIds;
    use wharf_ecm::{CollisionPolicy, NodeKind, StoreOutcome};

    use super::*;

    /// A configuration folder with an (empty) plugin, as `config::parse` wants.
    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/p.wasm"), b"").unwrap();
        dir
    }

    /// A partner as the configuration describes it, without validation, so
    /// that `endpoint_for`'s own checks are what is tested.
    fn partner(endpoint: &str, extra: &str) -> PartnerConfig {
        toml::from_str(&format!(
            "id = \"acme\"\nplugin = \"p.wasm\"\nendpoint = \"{endpoint}\"\n{extra}"
        ))
        .unwrap()
    }

    fn error(p: &PartnerConfig) -> String {
        let e = endpoint_for(p, Path::new("/nonexistent"))
            .err()
            .expect("an error");
        let text = format!("{e:#}");
        assert!(text.starts_with("partner acme: "), "{text}");
        text
    }

    fn ftp(p: &PartnerConfig) -> anyhow::Result<FtpConfig> {
        ftp_config(p, &endpoint_url(p)?)
    }

    fn sftp(p: &PartnerConfig) -> anyhow::Result<SftpConfig> {
        sftp_config(p, &endpoint_url(p)?)
    }

    #[test]
    fn ftp_urls_map_to_security_port_root_and_settings() {
        let p = partner(
            "ftps-implicit://b%C3%B6b@files.example.com/out%20box/",
            "password_env = \"ACME_PW\"\nca_file = \"/etc/acme-ca.pem\"\n\
             server_timezone = \"-05:30\"\nmax_connections = 2",
        );
        let c = ftp(&p).unwrap();
        assert_eq!(c.security, FtpSecurity::Implicit);
        assert_eq!((c.host.as_str(), c.port), ("files.example.com", 990));
        assert_eq!(c.user, "böb");
        assert_eq!(c.root, "/out box/");
        assert_eq!(c.password, SecretSource::Env("ACME_PW".into()));
        assert_eq!(c.tls.ca_file, Some(PathBuf::from("/etc/acme-ca.pem")));
        assert_eq!(c.server_utc_offset_minutes, -330);
        assert_eq!(c.common.max_connections, 2);

        let pw = "password_file = \"/run/secrets/acme\"";
        let c = ftp(&partner("ftp://acme@10.0.0.5", pw)).unwrap();
        assert_eq!(c.security, FtpSecurity::Plain);
        assert_eq!(
            (c.host.as_str(), c.port, c.root.as_str()),
            ("10.0.0.5", 21, "/")
        );
        assert_eq!(c.password, SecretSource::File("/run/secrets/acme".into()));
        assert_eq!(c.server_utc_offset_minutes, 0);
        assert_eq!(c.common.max_connections, 4);

        let c = ftp(&partner("ftps://acme@[::1]:2121/in", pw)).unwrap();
        assert_eq!(c.security, FtpSecurity::Explicit);
        assert_eq!(
            (c.host.as_str(), c.port, c.root.as_str()),
            ("::1", 2121, "/in")
        );
    }

    #[test]
    fn sftp_urls_map_to_key_or_password_login_and_host_keys() {
        let p = partner(
            "sftp://acme@sftp.example.com/upload",
            "key_file = \"/keys/acme\"\npassphrase_file = \"/keys/acme.pass\"\n\
             host_key = \"ssh-ed25519 AAAA\"\nknown_hosts = \"/keys/known_hosts\"",
        );
        let c = sftp(&p).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("sftp.example.com", 22));
        assert_eq!((c.user.as_str(), c.root.as_str()), ("acme", "/upload"));
        match &c.auth {
            SftpAuth::Key { path, passphrase } => {
                assert_eq!(path, Path::new("/keys/acme"));
                assert_eq!(
                    passphrase,
                    &Some(SecretSource::File("/keys/acme.pass".into()))
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.host_keys, vec!["ssh-ed25519 AAAA".to_string()]);
        assert_eq!(c.known_hosts, Some(PathBuf::from("/keys/known_hosts")));

        let c = sftp(&partner(
            "sftp://acme@127.0.0.1:2222",
            "password_env = \"PW\"\nhost_key = \"SHA256:x\"",
        ))
        .unwrap();
        assert_eq!((c.port, c.root.as_str()), (2222, "/"));
        assert!(matches!(&c.auth, SftpAuth::Password(SecretSource::Env(v)) if v == "PW"));
    }

    #[test]
    fn bad_endpoints_are_refused_naming_the_partner() {
        let pw = "password_env = \"PW\"\nhost_key = \"SHA256:x\"";
        for (endpoint, extra, expected) in [
            ("gopher://acme@x/", pw, "scheme \"gopher\" is not one of"),
            ("not a url", pw, "endpoint is not a URL"),
            (
                "sftp://127.0.0.1/",
                pw,
                "names no user (sftp://user@host/...)",
            ),
            ("ftp://127.0.0.1/", pw, "names no user"),
            ("sftp://acme@/x", pw, "not a URL: empty host"),
            ("sftp:/upload", pw, "names no host"),
            ("ftps:///upload", pw, "names no host"),
            ("ftp://acme@h/in?x=1", pw, "query or fragment"),
            ("ftp://acme@h/in#1", pw, "query or fragment"),
            (
                "ftp://acme@h/in%0D%0ADELE%20x",
                pw,
                "root folder contains a control",
            ),
            ("ftp://acme@h/%FF", pw, "not UTF-8"),
            ("ftp://acme@h/", "", "needs password_env or password_file"),
            (
                "sftp://acme@h/",
                "host_key = \"SHA256:x\"",
                "needs key_file, password_env",
            ),
            (
                "ftp://acme@h/",
                "password_env = \"A\"\npassword_file = \"/b\"",
                "set password_env or password_file, not both",
            ),
            (
                "ftp://acme@h/",
                "password_env = \"A\"\nhost_key = \"SHA256:x\"",
                "SSH settings",
            ),
            (
                "ftp://acme@h/",
                "password_env = \"A\"\nserver_timezone = \"CET\"",
                "\"CET\" is not an offset",
            ),
            (
                "sftp://acme@h/",
                "password_env = \"A\"\npassphrase_env = \"B\"\nhost_key = \"SHA256:x\"",
                "need a key_file",
            ),
            ("file://server/share", "", "absolute local folder"),
            ("file:///nonexistent/wharf/folder", "", "cannot open folder"),
        ] {
            let text = error(&partner(endpoint, extra));
            assert!(text.contains(expected), "{endpoint}: {text}");
        }
    }

    #[test]
    fn errors_never_show_secrets() {
        // A password in the URL is refused without being repeated.
        let text = error(&partner(
            "ftp://acme:hunter2@h/",
            "password_env = \"WHARF_CONNECT_UNSET_VAR\"",
        ));
        assert!(text.contains("must not contain a password"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        // A missing variable is named; a key that cannot be used is named,
        // its passphrase is not shown.
        let text = error(&partner(
            "sftp://acme@127.0.0.1/",
            "password_env = \"WHARF_CONNECT_UNSET_VAR\"\nhost_key = \"SHA256:x\"",
        ));
        assert!(
            text.contains("WHARF_CONNECT_UNSET_VAR is not set"),
            "{text}"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pass"), "hunter2\n").unwrap();
        std::fs::write(dir.path().join("key"), "not a key").unwrap();
        let text = error(&partner(
            "sftp://acme@127.0.0.1/",
            &format!(
                "key_file = \"{0}/key\"\npassphrase_file = \"{0}/pass\"\nhost_key = \"SHA256:x\"",
                dir.path().display()
            ),
        ));
        assert!(text.contains("key file"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn relative_secret_files_resolve_against_the_config_folder() {
        let dir = folder();
        std::fs::write(dir.path().join("acme.pw"), "pw\n").unwrap();
        std::fs::create_dir(dir.path().join("drop")).unwrap();
        let text = format!(
            "[[partner]]\nid = \"acme\"\nplugin = \"p.wasm\"\n\
             endpoint = \"ftps://acme@127.0.0.1/\"\npassword_file = \"acme.pw\"\n\
             ca_file = \"ca.pem\"\n\n\
             [[partner]]\nid = \"drop\"\nplugin = \"p.wasm\"\n\
             endpoint = \"file://{}/drop\"\n",
            dir.path().display()
        );
        let c = config::parse(&text, dir.path()).unwrap();
        assert_eq!(
            c.partners[0].password_file,
            Some(dir.path().join("acme.pw"))
        );
        assert_eq!(c.partners[0].ca_file, Some(dir.path().join("ca.pem")));
        // The password file is found; the CA file (which does not exist) is
        // named by its resolved path.
        let e = endpoint_for(&c.partners[0], &c.runtime.state_dir)
            .err()
            .unwrap();
        let e = format!("{e:#}");
        assert!(
            e.contains(&dir.path().join("ca.pem").display().to_string()),
            "{e}"
        );
        std::fs::remove_file(dir.path().join("acme.pw")).unwrap();
        let e = format!(
            "{:#}",
            endpoint_for(&c.partners[0], &c.runtime.state_dir)
                .err()
                .unwrap()
        );
        assert!(
            e.contains(&dir.path().join("acme.pw").display().to_string()),
            "{e}"
        );
        endpoint_for(&c.partners[1], &c.runtime.state_dir).unwrap();
    }

    fn document(
        parent: NodeId,
        name: &str,
        content: &[u8],
        categories: Vec<Category>,
    ) -> NewDocument {
        NewDocument {
            parent,
            name: name.into(),
            description: None,
            mime_type: "text/csv".into(),
            sha256: hex::encode(Sha256::digest(content)),
            categories,
            policy: CollisionPolicy::AddVersion,
        }
    }

    /// Folder, store, list, read back, and a retried store that is recognised.
    async fn round_trip(repo: &AnyRepository, categories: Vec<Category>) {
        let path = ["Partners".to_string(), "acme".to_string()];
        let folder = repo.ensure_folder(NodeId::ENTERPRISE, &path).await.unwrap();
        assert_eq!(
            repo.ensure_folder(NodeId::ENTERPRISE, &path).await.unwrap(),
            folder
        );
        let content = b"id;amount\n1;9.50\n";
        let doc = document(folder, "INV_1.csv", content, categories);
        let source = wharf_ecm::BytesSource(Bytes::from_static(content));
        let stored = repo.store_document(&doc, &source).await.unwrap();
        assert_eq!(stored.outcome, StoreOutcome::Created);
        let again = repo.store_document(&doc, &source).await.unwrap();
        assert_eq!(
            (again.node, again.outcome),
            (stored.node, StoreOutcome::AlreadyPresent)
        );
        let children = repo.children(folder).await.unwrap();
        assert_eq!(children.len(), 1);
        assert_eq!(children[0].id, stored.node);
        assert_eq!(children[0].name, "INV_1.csv");
        assert_eq!(children[0].kind, NodeKind::Document);
        assert_eq!(children[0].size, Some(content.len() as u64));
        let bytes = wharf_ecm::collect(repo.download(stored.node, None).await.unwrap())
            .await
            .unwrap();
        assert_eq!(bytes, content);
        assert_eq!(repo.node(folder).await.unwrap().name, "acme");
    }

    #[tokio::test]
    async fn the_embedded_repository_lives_in_the_state_dir_and_round_trips() {
        let dir = folder();
        let c = config::parse("[runtime]\nstate_dir = \"state\"\n", dir.path()).unwrap();
        let repo = open_repository(&c).await.unwrap();
        assert!(matches!(repo, AnyRepository::Embedded(_)));
        assert!(dir.path().join("state/ecm").is_dir());
        round_trip(&repo, Vec::new()).await;
        drop(repo);
        // Opened again, the document is still there.
        let repo = open_repository(&c).await.unwrap();
        let folder = repo
            .ensure_folder(NodeId::ENTERPRISE, &["Partners".into(), "acme".into()])
            .await
            .unwrap();
        assert_eq!(repo.children(folder).await.unwrap().len(), 1);
    }

    const MAPPING: &str = r#"
[categories."wharf Transfer"]
id = 7001
attributes = { "Partner" = 2, "Source Path" = 3, "Received" = 4, "SHA-256" = 5, "Size" = 6, "Plugin" = 7, "Plugin Version" = 8, "Plugin Digest" = 9 }

[workflows]
review = 41
"#;

    fn facade_mapping() -> Mapping {
        let attributes: HashMap<String, i64> = [
            "Partner",
            "Source Path",
            "Received",
            "SHA-256",
            "Size",
            "Plugin",
            "Plugin Version",
            "Plugin Digest",
        ]
        .iter()
        .zip(2..)
        .map(|(n, id)| (n.to_string(), id))
        .collect();
        let mut m = Mapping::default();
        m.categories.insert(
            PROVENANCE_CATEGORY.into(),
            CategoryIds {
                id: 7001,
                attributes,
            },
        );
        m.workflows.insert("review".into(), 41);
        m
    }

    fn provenance() -> Category {
        Provenance {
            partner: "acme".into(),
            source_path: "inbox/INV_1.csv".into(),
            received: std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            sha256: hex::encode(Sha256::digest(b"id;amount\n1;9.50\n")),
            size: 17,
            plugin: "acme-invoices".into(),
            plugin_version: "0.1.0".into(),
            plugin_digest: "00".repeat(32),
        }
        .category()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_content_server_is_reached_with_the_configured_password_and_mapping() {
        let server_dir = tempfile::tempdir().unwrap();
        let (backing, _) = Embedded::open(server_dir.path()).await.unwrap();
        let password = "otcs-pw-for-connect-tests";
        let mut users = HashMap::new();
        users.insert("wharf".to_string(), Secret::new(password));
        let facade = Facade::start(
            backing,
            FacadeConfig {
                users,
                mapping: facade_mapping(),
                ..Default::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();

        let dir = folder();
        std::fs::write(dir.path().join("otcs.pw"), format!("{password}\n")).unwrap();
        std::fs::write(dir.path().join("mapping.toml"), MAPPING).unwrap();
        let text = format!(
            "[ecm]\nkind = \"otcs\"\nurl = \"{}\"\nuser = \"wharf\"\n\
             password_file = \"otcs.pw\"\nmapping_file = \"mapping.toml\"\n",
            facade.base_url()
        );
        let c = config::parse(&text, dir.path()).unwrap();
        let repo = open_repository(&c).await.unwrap();
        let AnyRepository::Otcs(client) = &repo else {
            panic!("not a Content Server client")
        };
        assert_eq!(client.config().mapping, facade_mapping());
        assert_eq!(
            client.config().checksum_attribute,
            Some(("wharf Transfer".into(), "SHA-256".into()))
        );
        round_trip(&repo, vec![provenance()]).await;
        let folder = repo
            .ensure_folder(NodeId::ENTERPRISE, &["Partners".into(), "acme".into()])
            .await
            .unwrap();
        let doc = repo.children(folder).await.unwrap()[0].id;
        let cats = repo.categories(doc).await.unwrap();
        assert_eq!(cats, vec![provenance()]);
        facade.stop().await;
    }

    /// A Content Server configuration whose mapping file is `mapping.toml`.
    fn otcs_config(dir: &Path) -> WharfConfig {
        config::parse(
            "[ecm]\nkind = \"otcs\"\nurl = \"http://127.0.0.1:9/api\"\nuser = \"wharf\"\n\
             password_env = \"WHARF_CONNECT_OTCS_PW\"\nmapping_file = \"mapping.toml\"\n",
            dir,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_bad_mapping_file_is_named() {
        let dir = folder();
        let c = otcs_config(dir.path());
        let file = dir.path().join("mapping.toml");
        // SAFETY: only this test reads or writes this variable.
        unsafe { std::env::set_var("WHARF_CONNECT_OTCS_PW", "pw-not-shown") };
        for (mapping, expected) in [
            (None, "reading mapping_file"),
            (Some("[categories.x]\nid = \"seven\"\n"), "invalid type"),
            (
                Some("[workflows]\nreview = 41\n"),
                "category \"wharf Transfer\"",
            ),
            (
                Some("[categories.\"wharf Transfer\"]\nid = 1\nattributes = { \"SHA-256\" = 2 }\n"),
                "attribute \"Partner\" of category \"wharf Transfer\"",
            ),
        ] {
            if let Some(mapping) = mapping {
                std::fs::write(&file, mapping).unwrap();
            }
            let e = format!("{:#}", open_repository(&c).await.err().unwrap());
            assert!(e.starts_with("ecm: "), "{e}");
            assert!(e.contains(&file.display().to_string()), "{e}");
            assert!(e.contains(expected), "{e}");
            assert!(!e.contains("pw-not-shown"), "{e}");
        }
        // With a good mapping, the client is built.
        std::fs::write(&file, MAPPING).unwrap();
        open_repository(&c).await.unwrap();
    }
}
