//! A client of the OpenText Content Server REST API (the subset wharf
//! speaks): ticket authentication with transparent re-login, v2 nodes,
//! streamed multipart upload, versions, categories, permissions, RM
//! classifications and holds, search, workflows, paging, typed errors and
//! retries with backoff on throttling, server errors and connection errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::source::{ByteStream, ContentSource};
use crate::types::*;
use crate::{EcmError, ErrorKind, Repository, Result};

/// A secret (a password): never printed by `Debug` or `Display`.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// Read a secret from an environment variable.
    pub fn from_env(var: &str) -> Result<Self> {
        std::env::var(var)
            .map(Secret)
            .map_err(|_| EcmError::invalid(format!("environment variable {var} is not set")))
    }
    /// The value, for sending it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Ids of a category and its attributes on the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct CategoryIds {
    /// Category id (the category definition node).
    pub id: i64,
    /// Attribute name → attribute id.
    pub attributes: HashMap<String, i64>,
}

/// Names used by wharf → ids on the server (category definitions, workspace
/// types, workflow maps, RM classifications, users and groups).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Mapping {
    /// Category name → ids.
    pub categories: HashMap<String, CategoryIds>,
    /// Workspace type name → workspace type id.
    pub workspace_types: HashMap<String, i64>,
    /// Workflow name → workflow map id.
    pub workflows: HashMap<String, i64>,
    /// RM classification code → RM classification id.
    pub rm_classes: HashMap<String, i64>,
    /// User name → right id.
    pub users: HashMap<String, i64>,
    /// Group name → right id.
    pub groups: HashMap<String, i64>,
}

/// Retry policy for transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts in all (1 = no retry).
    pub attempts: u32,
    /// First delay; doubled each attempt, with jitter.
    pub base_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// How to reach and map a Content Server.
#[derive(Debug, Clone)]
pub struct OtcsConfig {
    /// The REST root, e.g. `https://host/otcs/cs.exe/api`.
    pub base_url: String,
    /// User name.
    pub username: String,
    /// Password (from an environment variable or file, never config text).
    pub password: Secret,
    /// Names → server ids.
    pub mapping: Mapping,
    /// The (category, attribute) holding each document's SHA-256, used to
    /// recognise an already stored document when an upload is retried.
    pub checksum_attribute: Option<(String, String)>,
    /// Timeout of metadata requests.
    pub metadata_timeout: Duration,
    /// Timeout of content transfers.
    pub content_timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Page size of list requests.
    pub page_size: u32,
    /// Extra PEM root certificate to trust (a private CA).
    pub ca_pem: Option<Vec<u8>>,
}

impl OtcsConfig {
    /// A configuration with defaults for everything but the server and user.
    pub fn new(base_url: impl Into<String>, username: impl Into<String>, password: Secret) -> Self {
        OtcsConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            username: username.into(),
            password,
            mapping: Mapping::default(),
            checksum_attribute: None,
            metadata_timeout: Duration::from_secs(60),
            content_timeout: Duration::from_secs(6 * 3600),
            retry: RetryPolicy::default(),
            page_size: 100,
            ca_pem: None,
        }
    }
}

/// The Content Server client.
#[derive(Clone)]
pub struct OtcsClient {
    http: reqwest::Client,
    cfg: Arc<OtcsConfig>,
    ticket: Arc<tokio::sync::Mutex<Option<String>>>,
    logins: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for OtcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtcsClient")
            .field("base_url", &self.cfg.base_url)
            .field("username", &self.cfg.username)
            .finish_non_exhaustive()
    }
}

fn transport_error(e: &reqwest::Error) -> EcmError {
    // The URL may carry ids but never secrets; the message is safe to show.
    let kind = if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() {
        ErrorKind::Transient
    } else {
        ErrorKind::Protocol
    };
    EcmError::new(kind, format!("request failed: {e}"))
}

/// Map an error response to a typed error.
pub fn map_error(status: StatusCode, body: &str) -> EcmError {
    let msg = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.chars().take(300).collect());
    let lower = msg.to_lowercase();
    let kind = match status.as_u16() {
        404 => ErrorKind::NotFound,
        429 | 500..=599 => ErrorKind::Transient,
        401 | 403 if lower.contains("hold") || lower.contains("retention") => {
            ErrorKind::HeldOrRetained
        }
        401 | 403 => ErrorKind::PermissionDenied,
        400 | 409 if lower.contains("already exists") => ErrorKind::NameCollision,
        400 | 409
            if lower.contains("hold")
                || lower.contains("retention")
                || lower.contains("retained") =>
        {
            ErrorKind::HeldOrRetained
        }
        400 | 409 | 422 => ErrorKind::Invalid,
        _ => ErrorKind::Protocol,
    };
    EcmError::new(kind, format!("HTTP {}: {msg}", status.as_u16()))
}

fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << attempt.min(16))
        .min(policy.max_delay);
    // Full jitter keeps many clients from retrying in step.
    let ms = exp.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::random_range(0..=ms / 2 + 1))
}

fn protocol(what: &str) -> EcmError {
    EcmError::new(ErrorKind::Protocol, format!("unexpected response: {what}"))
}

/// The `properties` object of a v2 item (`{"data": {"properties": …}}`).
fn properties(item: &Value) -> Option<&Value> {
    item.get("data")
        .and_then(|d| d.get("properties"))
        .or_else(|| item.get("properties"))
}

fn as_i64(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Parse a node from v2 `properties`.
pub fn parse_node(props: &Value) -> Result<Node> {
    let id = as_i64(props.get("id")).ok_or_else(|| protocol("node without id"))?;
    let kind = NodeKind::from_subtype(as_i64(props.get("type")).unwrap_or(-1));
    let s = |k: &str| props.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Ok(Node {
        id: NodeId(id),
        parent: as_i64(props.get("parent_id"))
            .filter(|p| *p > 0)
            .map(NodeId),
        name: s("name").unwrap_or_default(),
        kind,
        size: if kind == NodeKind::Document {
            as_i64(props.get("size")).map(|s| s as u64)
        } else {
            None
        },
        mime_type: s("mime_type"),
        description: s("description").filter(|d| !d.is_empty()),
        created: s("create_date").unwrap_or_default(),
        modified: s("modify_date").unwrap_or_default(),
        versions: None,
    })
}

/// Parse the items of a v2 list.
pub fn parse_list(v: &Value) -> Result<Vec<Node>> {
    let items = v
        .get("results")
        .and_then(|r| r.as_array())
        .ok_or_else(|| protocol("list without results"))?;
    items
        .iter()
        .map(|i| {
            properties(i)
                .ok_or_else(|| protocol("item without properties"))
                .and_then(parse_node)
        })
        .collect()
}

/// The page count of a v2 list (`collection.paging.page_total`).
fn page_total(v: &Value) -> Option<i64> {
    let p = v.get("collection")?.get("paging")?;
    as_i64(p.get("page_total"))
}

/// The id returned by a create call, in any of the documented shapes.
pub fn created_id(v: &Value) -> Option<i64> {
    as_i64(v.get("id"))
        .or_else(|| as_i64(v.get("results").and_then(|r| r.get("id"))))
        .or_else(|| {
            v.get("results")
                .and_then(|r| properties(r))
                .and_then(|p| as_i64(p.get("id")))
        })
}

enum Payload {
    None,
    Form(Vec<(String, String)>),
    Body(Value),
}

impl OtcsClient {
    /// Build a client (no request is made until the first call).
    pub fn new(cfg: OtcsConfig) -> Result<Self> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(15))
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(pem) = &cfg.ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| EcmError::invalid(format!("CA certificate: {e}")))?;
            b = b.add_root_certificate(cert);
        }
        let http = b
            .build()
            .map_err(|e| EcmError::invalid(format!("HTTP client: {e}")))?;
        Ok(OtcsClient {
            http,
            cfg: Arc::new(cfg),
            ticket: Arc::new(tokio::sync::Mutex::new(None)),
            logins: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        })
    }

    /// How many times the client has logged in (re-logins included).
    pub fn login_count(&self) -> u64 {
        self.logins.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The configuration.
    pub fn config(&self) -> &OtcsConfig {
        &self.cfg
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.cfg.base_url, path.trim_start_matches('/'))
    }

    /// Wait until `GET /v1/ping` answers 200 or the deadline passes.
    pub async fn wait_ready(&self, deadline: Duration) -> Result<()> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let r = self
                .http
                .get(self.url("v1/ping"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if matches!(&r, Ok(resp) if resp.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= end {
                return Err(EcmError::new(
                    ErrorKind::Transient,
                    "server not ready before the deadline",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn login(&self) -> Result<String> {
        let mut attempt = 0;
        loop {
            let r = self
                .http
                .post(self.url("v1/auth"))
                .timeout(self.cfg.metadata_timeout)
                .form(&[
                    ("username", self.cfg.username.as_str()),
                    ("password", self.cfg.password.expose()),
                ])
                .send()
                .await;
            let err = match r {
                Ok(resp) if resp.status().is_success() => {
                    let header = resp
                        .headers()
                        .get("OTCSTicket")
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_string);
                    let v: Value = resp.json().await.map_err(|e| transport_error(&e))?;
                    let ticket = v
                        .get("ticket")
                        .and_then(|t| t.as_str())
                        .map(str::to_string)
                        .or(header)
                        .ok_or_else(|| protocol("authentication answer without a ticket"))?;
                    self.logins
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(ticket);
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    let e = map_error(status, &body);
                    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                        return Err(EcmError::new(
                            ErrorKind::PermissionDenied,
                            format!(
                                "authentication of {:?} refused: {}",
                                self.cfg.username, e.message
                            ),
                        ));
                    }
                    e
                }
                Err(e) => transport_error(&e),
            };
            attempt += 1;
            if !err.is_transient() || attempt >= self.cfg.retry.attempts {
                return Err(err);
            }
            tokio::time::sleep(backoff(&self.cfg.retry, attempt)).await;
        }
    }

    async fn current_ticket(&self) -> Result<String> {
        let mut t = self.ticket.lock().await;
        if let Some(t) = t.as_ref() {
            return Ok(t.clone());
        }
        let fresh = self.login().await?;
        *t = Some(fresh.clone());
        Ok(fresh)
    }

    /// Forget `stale` (if still current) so the next call logs in again.
    async fn invalidate(&self, stale: &str) {
        let mut t = self.ticket.lock().await;
        if t.as_deref() == Some(stale) {
            *t = None;
        }
    }

    /// Send a request built by `build`, with the ticket, re-login once on
    /// 401, and retries on transient failures. `idempotent` requests are
    /// retried on any transient failure; others only when the server surely
    /// did not act (connection refused, 429, 503).
    async fn send_with(
        &self,
        idempotent: bool,
        build: &(dyn Fn(&str) -> RequestBuilder + Send + Sync),
    ) -> Result<reqwest::Response> {
        let mut attempt = 0u32;
        let mut relogged = false;
        loop {
            let ticket = self.current_ticket().await?;
            let r = build(&ticket).header("OTCSTicket", &ticket).send().await;
            let (err, safe_to_retry) = match r {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !relogged => {
                    // The ticket expired: authenticate again once and replay.
                    tracing::debug!("ticket refused; authenticating again");
                    self.invalidate(&ticket).await;
                    relogged = true;
                    continue;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    let safe = idempotent
                        || status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::SERVICE_UNAVAILABLE;
                    (map_error(status, &body), safe)
                }
                Err(e) => (transport_error(&e), idempotent || e.is_connect()),
            };
            attempt += 1;
            if !err.is_transient() || !safe_to_retry || attempt >= self.cfg.retry.attempts {
                return Err(err);
            }
            tracing::debug!(attempt, error = %err, "transient failure; retrying");
            tokio::time::sleep(backoff(&self.cfg.retry, attempt)).await;
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        payload: Payload,
        idempotent: bool,
    ) -> Result<Value> {
        let url = self.url(path);
        let timeout = self.cfg.metadata_timeout;
        let build = move |_: &str| {
            let rb = self.http.request(method.clone(), &url).timeout(timeout);
            match &payload {
                Payload::None => rb,
                Payload::Form(f) => rb.form(f),
                Payload::Body(b) => rb.form(&[("body", b.to_string())]),
            }
        };
        let resp = self.send_with(idempotent, &build).await?;
        let text = resp.text().await.map_err(|e| transport_error(&e))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| protocol(&format!("invalid JSON: {e}")))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, Payload::None, true).await
    }

    /// All pages of a v2 list at `path` (which may carry a query already).
    async fn list_all(&self, path: &str) -> Result<Vec<Node>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        let mut page = 1i64;
        loop {
            let v = self
                .get(&format!(
                    "{path}{sep}limit={}&page={page}",
                    self.cfg.page_size
                ))
                .await?;
            let items = parse_list(&v)?;
            let n = items.len();
            out.extend(items);
            let total = page_total(&v).unwrap_or(page);
            if page >= total || n == 0 {
                return Ok(out);
            }
            page += 1;
        }
    }

    async fn find_child(&self, parent: NodeId, name: &str) -> Result<Option<Node>> {
        let q = serde_urlencoded::to_string([("where_name", name)])
            .map_err(|e| EcmError::invalid(e.to_string()))?;
        let items = self
            .list_all(&format!("v2/nodes/{parent}/nodes?{q}"))
            .await?;
        // `where_name` may match loosely on some servers: compare exactly.
        Ok(items.into_iter().find(|n| n.name == name))
    }

    fn category_ids(&self, name: &str) -> Result<&CategoryIds> {
        self.cfg.mapping.categories.get(name).ok_or_else(|| {
            EcmError::invalid(format!(
                "category {name:?} is not in the configured mapping"
            ))
        })
    }

    /// Content Server's JSON for a category: `{"<cat>_<attr>": value, …}`.
    fn category_values(&self, cat: &Category) -> Result<(i64, serde_json::Map<String, Value>)> {
        let ids = self.category_ids(&cat.name)?;
        let mut m = serde_json::Map::new();
        for a in &cat.attributes {
            let aid = ids.attributes.get(&a.name).ok_or_else(|| {
                EcmError::invalid(format!(
                    "attribute {:?} of category {:?} is not mapped",
                    a.name, cat.name
                ))
            })?;
            m.insert(format!("{}_{}", ids.id, aid), a.value.to_json());
        }
        Ok((ids.id, m))
    }

    /// The categories to write for a document, checksum attribute included.
    fn with_checksum(&self, cats: &[Category], sha: &str) -> Vec<Category> {
        let mut cats = cats.to_vec();
        if let Some((c, a)) = &self.cfg.checksum_attribute {
            let attr = Attribute {
                name: a.clone(),
                value: AttributeValue::Text(sha.to_string()),
            };
            match cats.iter_mut().find(|x| &x.name == c) {
                Some(cat) => {
                    cat.attributes.retain(|x| &x.name != a);
                    cat.attributes.push(attr);
                }
                None => cats.push(Category {
                    name: c.clone(),
                    attributes: vec![attr],
                }),
            }
        }
        cats
    }

    async fn stored_checksum(&self, node: NodeId) -> Result<Option<String>> {
        let Some((c, a)) = &self.cfg.checksum_attribute else {
            return Ok(None);
        };
        let cats = self.categories(node).await?;
        Ok(cats
            .into_iter()
            .find(|x| &x.name == c)
            .and_then(|x| x.attributes.into_iter().find(|y| &y.name == a))
            .map(|y| y.value.as_text()))
    }

    async fn upload(
        &self,
        path: &str,
        fields: Vec<(&'static str, String)>,
        file_name: &str,
        mime: &str,
        content: &dyn ContentSource,
    ) -> Result<Value> {
        // Opened once per attempt so a retry resends from the start; never
        // retried blindly: the caller re-checks what the server holds first.
        let ticket = self.current_ticket().await?;
        let mut relogged = false;
        let mut ticket = ticket;
        loop {
            let reader = content.open().await?;
            let stream = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024);
            let body = reqwest::Body::wrap_stream(stream);
            let part = match content.len_hint() {
                Some(len) => reqwest::multipart::Part::stream_with_length(body, len),
                None => reqwest::multipart::Part::stream(body),
            }
            .file_name(file_name.to_string())
            .mime_str(mime)
            .map_err(|e| EcmError::invalid(format!("MIME type {mime:?}: {e}")))?;
            let mut form = reqwest::multipart::Form::new();
            for (k, v) in &fields {
                form = form.text(*k, v.clone());
            }
            form = form.part("file", part);
            let r = self
                .http
                .post(self.url(path))
                .timeout(self.cfg.content_timeout)
                .header("OTCSTicket", &ticket)
                .multipart(form)
                .send()
                .await;
            match r {
                Ok(resp) if resp.status().is_success() => {
                    let text = resp.text().await.map_err(|e| transport_error(&e))?;
                    return serde_json::from_str(&text).or(Ok(Value::Null));
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !relogged => {
                    self.invalidate(&ticket).await;
                    ticket = self.current_ticket().await?;
                    relogged = true;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    return Err(map_error(status, &body));
                }
                Err(e) => return Err(transport_error(&e)),
            }
        }
    }

    async fn version_count(&self, node: NodeId) -> Result<u32> {
        Ok(self
            .versions(node)
            .await?
            .iter()
            .map(|v| v.number)
            .max()
            .unwrap_or(0))
    }

    async fn put_categories(&self, node: NodeId, cats: &[Category], applied: &[i64]) -> Result<()> {
        for cat in cats {
            let (cid, mut values) = self.category_values(cat)?;
            if applied.contains(&cid) {
                self.call(
                    Method::PUT,
                    &format!("v2/nodes/{node}/categories/{cid}"),
                    Payload::Body(Value::Object(values)),
                    true,
                )
                .await?;
            } else {
                values.insert("category_id".into(), cid.into());
                self.call(
                    Method::POST,
                    &format!("v2/nodes/{node}/categories"),
                    Payload::Body(Value::Object(values)),
                    false,
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn applied_categories(&self, node: NodeId) -> Result<Vec<i64>> {
        let v = self.get(&format!("v2/nodes/{node}/categories")).await?;
        let mut ids = Vec::new();
        for item in results(&v) {
            if let Some(map) = item
                .get("data")
                .and_then(|d| d.get("categories"))
                .and_then(|c| c.as_object())
            {
                for k in map.keys() {
                    if let Some(id) = k.split('_').next().and_then(|s| s.parse::<i64>().ok())
                        && !ids.contains(&id)
                    {
                        ids.push(id);
                    }
                }
            }
        }
        Ok(ids)
    }

    /// One store attempt; `pending` remembers a version upload whose answer
    /// was lost, so the retry finishes it instead of adding another.
    async fn store_once(
        &self,
        doc: &NewDocument,
        content: &dyn ContentSource,
        pending: &mut Option<(NodeId, u32)>,
    ) -> Result<Stored> {
        let cats = self.with_checksum(&doc.categories, &doc.sha256);
        if let Some((node, before)) = *pending {
            let now = self.version_count(node).await?;
            if now > before {
                let applied = self.applied_categories(node).await?;
                self.put_categories(node, &cats, &applied).await?;
                *pending = None;
                let name = self.node(node).await?.name;
                return Ok(Stored {
                    node,
                    name,
                    version: now,
                    outcome: StoreOutcome::VersionAdded,
                });
            }
        }
        let mut n = 1u32;
        let mut races = 0;
        loop {
            let name = if n == 1 {
                doc.name.clone()
            } else {
                suffixed_name(&doc.name, n)
            };
            match self.find_child(doc.parent, &name).await? {
                None => {
                    let mut roles = serde_json::Map::new();
                    for cat in &cats {
                        let (cid, values) = self.category_values(cat)?;
                        roles.insert(cid.to_string(), Value::Object(values));
                    }
                    let mut body = json!({
                        "type": 144,
                        "parent_id": doc.parent.0,
                        "name": name,
                    });
                    if let Some(d) = &doc.description {
                        body["description"] = d.clone().into();
                    }
                    if !roles.is_empty() {
                        body["roles"] = json!({ "categories": roles });
                    }
                    match self
                        .upload(
                            "v2/nodes",
                            vec![("body", body.to_string())],
                            &name,
                            &doc.mime_type,
                            content,
                        )
                        .await
                    {
                        Ok(v) => {
                            let id = created_id(&v).ok_or_else(|| protocol("create without id"))?;
                            return Ok(Stored {
                                node: NodeId(id),
                                name,
                                version: 1,
                                outcome: StoreOutcome::Created,
                            });
                        }
                        // Someone created it meanwhile: look again.
                        Err(e) if e.kind == ErrorKind::NameCollision && races < 10 => races += 1,
                        Err(e) => return Err(e),
                    }
                }
                Some(existing) if existing.kind == NodeKind::Document => {
                    if self.stored_checksum(existing.id).await?.as_deref()
                        == Some(doc.sha256.as_str())
                    {
                        let version = self.version_count(existing.id).await?;
                        return Ok(Stored {
                            node: existing.id,
                            name,
                            version,
                            outcome: StoreOutcome::AlreadyPresent,
                        });
                    }
                    match doc.policy {
                        CollisionPolicy::AddVersion if n == 1 => {
                            let before = self.version_count(existing.id).await?;
                            *pending = Some((existing.id, before));
                            let mut fields = vec![("add_major_version", "false".to_string())];
                            if let Some(d) = &doc.description {
                                fields.push(("description", d.clone()));
                            }
                            self.upload(
                                &format!("v2/nodes/{}/versions", existing.id),
                                fields,
                                &name,
                                &doc.mime_type,
                                content,
                            )
                            .await?;
                            let applied = self.applied_categories(existing.id).await?;
                            self.put_categories(existing.id, &cats, &applied).await?;
                            *pending = None;
                            return Ok(Stored {
                                node: existing.id,
                                name,
                                version: before + 1,
                                outcome: StoreOutcome::VersionAdded,
                            });
                        }
                        CollisionPolicy::NewDocument => n += 1,
                        _ => {
                            return Err(EcmError::new(
                                ErrorKind::NameCollision,
                                format!("an item named {name:?} already exists in the folder"),
                            ));
                        }
                    }
                }
                Some(_) if doc.policy == CollisionPolicy::NewDocument => n += 1,
                Some(_) => {
                    return Err(EcmError::new(
                        ErrorKind::NameCollision,
                        format!("an item named {name:?} already exists in the folder"),
                    ));
                }
            }
            if n > 1000 {
                return Err(EcmError::new(
                    ErrorKind::NameCollision,
                    "no free name found",
                ));
            }
        }
    }

    fn right_id(&self, p: &Principal) -> Result<i64> {
        match p {
            Principal::User(u) => self.cfg.mapping.users.get(u).copied(),
            Principal::Group(g) => self.cfg.mapping.groups.get(g).copied(),
            _ => None,
        }
        .ok_or_else(|| {
            EcmError::invalid(format!("principal {p:?} is not in the configured mapping"))
        })
    }

    fn principal_of(&self, right_id: i64) -> Principal {
        if let Some((u, _)) = self
            .cfg
            .mapping
            .users
            .iter()
            .find(|(_, id)| **id == right_id)
        {
            return Principal::User(u.clone());
        }
        if let Some((g, _)) = self
            .cfg
            .mapping
            .groups
            .iter()
            .find(|(_, id)| **id == right_id)
        {
            return Principal::Group(g.clone());
        }
        Principal::User(right_id.to_string())
    }
}

fn parse_categories_item(
    item: &Value,
    reverse: &HashMap<i64, (&String, HashMap<i64, &String>)>,
) -> Option<Category> {
    let data = item.get("data")?.get("categories")?.as_object()?;
    let meta = item.get("metadata").and_then(|m| m.get("categories"));
    let mut cat_name: Option<String> = None;
    let mut attributes = Vec::new();
    for (k, v) in data {
        let mut parts = k.split('_');
        let cid: i64 = parts.next()?.parse().ok()?;
        let Some(aid) = parts.next().and_then(|s| s.parse::<i64>().ok()) else {
            continue;
        };
        if parts.next().is_some() {
            continue; // set rows are not mapped
        }
        let (cname, anames) = match reverse.get(&cid) {
            Some((c, attrs)) => ((*c).clone(), attrs.get(&aid).map(|s| (*s).clone())),
            None => (
                meta.and_then(|m| m.get(cid.to_string()))
                    .and_then(|m| m.get("name"))
                    .and_then(|n| n.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| cid.to_string()),
                meta.and_then(|m| m.get(k))
                    .and_then(|m| m.get("name"))
                    .and_then(|n| n.as_str())
                    .map(str::to_string),
            ),
        };
        cat_name = Some(cname);
        let Some(aname) = anames else { continue };
        if v.is_null() {
            continue;
        }
        if let Some(value) = AttributeValue::from_json(v) {
            attributes.push(Attribute { name: aname, value });
        }
    }
    Some(Category {
        name: cat_name?,
        attributes,
    })
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The Content Server query for a search.
pub fn query_text(q: &SearchQuery) -> String {
    let mut terms = vec!["OTSubType:144".to_string()];
    if let Some(n) = &q.name {
        terms.push(format!("OTName:{}", quote(n)));
    }
    for f in &q.attributes {
        terms.push(format!(
            "{}:{}",
            quote(&format!("{}:{}", f.category, f.attribute)),
            quote(&f.value)
        ));
    }
    terms.join(" AND ")
}

impl Repository for OtcsClient {
    async fn ensure_folder(&self, parent: NodeId, path: &[String]) -> Result<NodeId> {
        let mut cur = parent;
        for seg in path {
            check_name(seg)?;
            let mut tries = 0;
            cur = loop {
                match self.find_child(cur, seg).await? {
                    Some(n) if n.kind.is_container() => break n.id,
                    Some(_) => {
                        return Err(EcmError::new(
                            ErrorKind::NameCollision,
                            format!("{seg:?} exists and is not a folder"),
                        ));
                    }
                    None => {
                        let body = json!({"type": 0, "parent_id": cur.0, "name": seg});
                        match self
                            .call(Method::POST, "v2/nodes", Payload::Body(body), false)
                            .await
                        {
                            Ok(v) => {
                                break NodeId(
                                    created_id(&v).ok_or_else(|| protocol("create without id"))?,
                                );
                            }
                            // Created concurrently, or our earlier attempt
                            // succeeded without an answer: look it up again.
                            Err(e)
                                if (e.kind == ErrorKind::NameCollision || e.is_transient())
                                    && tries < self.cfg.retry.attempts =>
                            {
                                tries += 1;
                                if e.is_transient() {
                                    tokio::time::sleep(backoff(&self.cfg.retry, tries)).await;
                                }
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            };
        }
        Ok(cur)
    }

    async fn create_workspace(&self, parent: NodeId, spec: &WorkspaceSpec) -> Result<NodeId> {
        check_name(&spec.name)?;
        let t = self
            .cfg
            .mapping
            .workspace_types
            .get(&spec.workspace_type)
            .ok_or_else(|| {
                EcmError::invalid(format!(
                    "workspace type {:?} is not mapped",
                    spec.workspace_type
                ))
            })?;
        let body = json!({
            "wksp_type_id": t,
            "parent_id": parent.0,
            "name": spec.name,
            "bo_id": spec.business_id,
        });
        let v = self
            .call(
                Method::POST,
                "v2/businessworkspaces",
                Payload::Body(body),
                false,
            )
            .await?;
        Ok(NodeId(
            created_id(&v).ok_or_else(|| protocol("create without id"))?,
        ))
    }

    async fn find_workspace(
        &self,
        workspace_type: &str,
        business_id: &str,
    ) -> Result<Option<Node>> {
        let t = self
            .cfg
            .mapping
            .workspace_types
            .get(workspace_type)
            .ok_or_else(|| {
                EcmError::invalid(format!("workspace type {workspace_type:?} is not mapped"))
            })?;
        let q = serde_urlencoded::to_string([
            ("where_workspace_type_id", t.to_string()),
            ("where_bo_id", business_id.to_string()),
        ])
        .map_err(|e| EcmError::invalid(e.to_string()))?;
        Ok(self
            .list_all(&format!("v2/businessworkspaces?{q}"))
            .await?
            .into_iter()
            .next())
    }

    async fn store_document(
        &self,
        doc: &NewDocument,
        content: &dyn ContentSource,
    ) -> Result<Stored> {
        check_name(&doc.name)?;
        let mut pending = None;
        let mut attempt = 0;
        loop {
            match self.store_once(doc, content, &mut pending).await {
                Err(e) if e.is_transient() && attempt + 1 < self.cfg.retry.attempts => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "store failed; checking and retrying");
                    tokio::time::sleep(backoff(&self.cfg.retry, attempt)).await;
                }
                r => return r,
            }
        }
    }

    async fn set_categories(&self, node: NodeId, categories: &[Category]) -> Result<()> {
        let applied = self.applied_categories(node).await?;
        self.put_categories(node, categories, &applied).await
    }

    async fn categories(&self, node: NodeId) -> Result<Vec<Category>> {
        let v = self.get(&format!("v2/nodes/{node}/categories")).await?;
        let reverse: HashMap<i64, (&String, HashMap<i64, &String>)> = self
            .cfg
            .mapping
            .categories
            .iter()
            .map(|(name, ids)| {
                (
                    ids.id,
                    (
                        name,
                        ids.attributes.iter().map(|(a, id)| (*id, a)).collect(),
                    ),
                )
            })
            .collect();
        Ok(results(&v)
            .filter_map(|item| parse_categories_item(item, &reverse))
            .collect())
    }

    async fn set_permissions(&self, node: NodeId, grants: &[Grant]) -> Result<()> {
        for g in grants {
            let rights: Vec<&str> = g.rights.iter().map(|r| r.as_str()).collect();
            match &g.principal {
                Principal::Owner | Principal::OwnerGroup | Principal::Public => {
                    let which = match g.principal {
                        Principal::Owner => "owner",
                        Principal::OwnerGroup => "group",
                        _ => "public",
                    };
                    self.call(
                        Method::PUT,
                        &format!("v2/nodes/{node}/permissions/{which}"),
                        Payload::Body(json!({"permissions": rights})),
                        true,
                    )
                    .await?;
                }
                p => {
                    let rid = self.right_id(p)?;
                    let existing = self.permissions(node).await?;
                    let present = existing.iter().any(|e| &e.principal == p);
                    if present {
                        self.call(
                            Method::PUT,
                            &format!("v2/nodes/{node}/permissions/custom/{rid}"),
                            Payload::Body(json!({"permissions": rights})),
                            true,
                        )
                        .await?;
                    } else {
                        self.call(
                            Method::POST,
                            &format!("v2/nodes/{node}/permissions/custom"),
                            Payload::Body(
                                json!({"permissions": rights, "right_id": rid, "apply_to": 0}),
                            ),
                            false,
                        )
                        .await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn permissions(&self, node: NodeId) -> Result<Vec<Grant>> {
        let v = self.get(&format!("v2/nodes/{node}/permissions")).await?;
        let mut out = Vec::new();
        for item in results(&v) {
            let Some(p) = item.get("data").and_then(|d| d.get("permissions")) else {
                continue;
            };
            let rights: Vec<Right> = p
                .get("permissions")
                .and_then(|x| x.as_array())
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str().and_then(Right::parse))
                .collect();
            let principal = match p.get("type").and_then(|t| t.as_str()) {
                Some("owner") => Principal::Owner,
                Some("group") => Principal::OwnerGroup,
                Some("public") => Principal::Public,
                _ => match as_i64(p.get("right_id")) {
                    Some(id) => self.principal_of(id),
                    None => continue,
                },
            };
            // Servers list owner/group/public even when empty.
            if rights.is_empty() && !matches!(principal, Principal::User(_) | Principal::Group(_)) {
                continue;
            }
            out.push(Grant { principal, rights });
        }
        Ok(out)
    }

    async fn classify(&self, node: NodeId, rm_class: &str) -> Result<()> {
        let id = match self.cfg.mapping.rm_classes.get(rm_class) {
            Some(id) => *id,
            None => rm_class.parse().map_err(|_| {
                EcmError::invalid(format!("RM classification {rm_class:?} is not mapped"))
            })?,
        };
        self.call(
            Method::POST,
            &format!("v1/nodes/{node}/rmclassifications"),
            Payload::Body(json!({"class_id": id})),
            true,
        )
        .await?;
        Ok(())
    }

    async fn apply_hold(&self, node: NodeId, hold: &str) -> Result<()> {
        let q = serde_urlencoded::to_string([("holdname", hold)])
            .map_err(|e| EcmError::invalid(e.to_string()))?;
        let v = self.get(&format!("v2/hold?{q}")).await?;
        let r = v.get("results");
        let first = r.and_then(|r| r.as_array()).and_then(|a| a.first()).or(r);
        let hid = first
            .and_then(|x| {
                as_i64(x.get("id"))
                    .or_else(|| {
                        x.get("data")
                            .and_then(|d| d.get("hold"))
                            .and_then(|h| as_i64(h.get("id")))
                    })
                    .or_else(|| properties(x).and_then(|p| as_i64(p.get("id"))))
            })
            .ok_or_else(|| EcmError::not_found(format!("hold {hold:?}")))?;
        self.call(
            Method::POST,
            &format!("v1/nodes/{node}/holds"),
            Payload::Body(json!({"hold_id": hid})),
            true,
        )
        .await?;
        Ok(())
    }

    async fn start_workflow(&self, request: &WorkflowStart) -> Result<WorkflowId> {
        let map = self
            .cfg
            .mapping
            .workflows
            .get(&request.workflow)
            .ok_or_else(|| {
                EcmError::invalid(format!("workflow {:?} is not mapped", request.workflow))
            })?;
        let docs: Vec<String> = request.documents.iter().map(|d| d.to_string()).collect();
        let v = self
            .call(
                Method::POST,
                "v2/draftprocesses",
                Payload::Body(json!({"workflow_id": map, "doc_ids": docs.join(",")})),
                false,
            )
            .await?;
        let results = v.get("results");
        let draft = results
            .and_then(|r| as_i64(r.get("draftprocess_id")))
            .ok_or_else(|| protocol("draft process without draftprocess_id"))?;
        let comment = if request.title.is_empty() {
            request.comment.clone()
        } else {
            format!("{}\n\n{}", request.title, request.comment)
        };
        let v = self
            .call(
                Method::PUT,
                &format!("v2/draftprocesses/{draft}"),
                Payload::Body(json!({"action": "Initiate", "comment": comment})),
                false,
            )
            .await?;
        let pid = v
            .get("results")
            .and_then(|r| as_i64(r.get("process_id")).or_else(|| as_i64(r.get("work_id"))))
            .unwrap_or(draft);
        Ok(WorkflowId(pid))
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<Node>> {
        let limit = query.limit.unwrap_or(1000) as usize;
        let mut out = Vec::new();
        let mut page = 1i64;
        loop {
            let mut form = vec![
                ("where".to_string(), query_text(query)),
                ("page".to_string(), page.to_string()),
                ("limit".to_string(), self.cfg.page_size.to_string()),
            ];
            if let Some(loc) = query.location {
                form.push(("location_id".to_string(), loc.to_string()));
            }
            let v = self
                .call(Method::POST, "v2/search", Payload::Form(form), true)
                .await?;
            let items = parse_list(&v)?;
            let n = items.len();
            out.extend(items);
            if out.len() >= limit || n == 0 || page >= page_total(&v).unwrap_or(page) {
                out.truncate(limit);
                return Ok(out);
            }
            page += 1;
        }
    }

    async fn download(&self, node: NodeId, version: Option<u32>) -> Result<ByteStream> {
        let path = match version {
            Some(v) => format!("v2/nodes/{node}/versions/{v}/content"),
            None => format!("v2/nodes/{node}/content"),
        };
        let url = self.url(&path);
        let timeout = self.cfg.content_timeout;
        let build = move |_: &str| self.http.get(&url).timeout(timeout);
        let resp = self.send_with(true, &build).await?;
        Ok(Box::pin(
            resp.bytes_stream().map_err(|e| transport_error(&e)),
        ))
    }

    async fn node(&self, node: NodeId) -> Result<Node> {
        let v = self
            .get(&format!("v2/nodes/{node}?fields=properties"))
            .await?;
        let props = v
            .get("results")
            .and_then(properties)
            .ok_or_else(|| protocol("node without properties"))?;
        parse_node(props)
    }

    async fn versions(&self, node: NodeId) -> Result<Vec<Version>> {
        let v = self.get(&format!("v2/nodes/{node}/versions")).await?;
        let mut out = Vec::new();
        for item in results(&v) {
            let Some(x) = item
                .get("data")
                .and_then(|d| d.get("versions"))
                .or(Some(item))
            else {
                continue;
            };
            let s = |k: &str| x.get(k).and_then(|v| v.as_str()).map(str::to_string);
            out.push(Version {
                number: as_i64(x.get("version_number"))
                    .ok_or_else(|| protocol("version without number"))?
                    as u32,
                size: as_i64(x.get("file_size")).unwrap_or(0) as u64,
                mime_type: s("mime_type").unwrap_or_default(),
                file_name: s("file_name").or_else(|| s("name")).unwrap_or_default(),
                sha256: None,
                created: s("create_date").unwrap_or_default(),
                description: s("description").filter(|d| !d.is_empty()),
            });
        }
        out.sort_by_key(|v| v.number);
        Ok(out)
    }

    async fn children(&self, node: NodeId) -> Result<Vec<Node>> {
        self.list_all(&format!("v2/nodes/{node}/nodes")).await
    }

    async fn delete(&self, node: NodeId) -> Result<()> {
        self.call(
            Method::DELETE,
            &format!("v2/nodes/{node}"),
            Payload::None,
            true,
        )
        .await
        .map(|_| ())
    }

    async fn record_event(&self, _event: &AuditEvent) -> Result<()> {
        Err(EcmError::new(
            ErrorKind::Unsupported,
            "Content Server has no API to write audit events; archive them as documents",
        ))
    }

    async fn audit(&self, node: Option<NodeId>) -> Result<Vec<AuditRecord>> {
        let Some(node) = node else {
            return Err(EcmError::new(
                ErrorKind::Unsupported,
                "Content Server audit is read per node",
            ));
        };
        let v = self.get(&format!("v2/nodes/{node}/audit")).await?;
        let mut out = Vec::new();
        for (i, item) in results(&v).enumerate() {
            let x = item
                .get("data")
                .and_then(|d| d.get("audit"))
                .unwrap_or(item);
            let s = |k: &str| x.get(k).and_then(|v| v.as_str()).map(str::to_string);
            out.push(AuditRecord {
                id: as_i64(x.get("id")).unwrap_or(i as i64 + 1),
                at: s("audit_date").unwrap_or_default(),
                event: AuditEvent {
                    action: s("audit_name").unwrap_or_default(),
                    actor: s("user_name").unwrap_or_default(),
                    node: Some(node),
                    sha256: s("sha256"),
                    detail: s("value1").unwrap_or_default(),
                },
            });
        }
        Ok(out)
    }
}

/// The items of a v2 list answer (`{"results": [...]}`); none when absent.
fn results(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("results")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
}
