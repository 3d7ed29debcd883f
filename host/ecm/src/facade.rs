//! A development and test server: the embedded repository exposed over the
//! Content Server REST subset the [`crate::otcs`] client speaks (same paths,
//! form fields, JSON shapes, ticket header and error shape), so the real
//! HTTP client is exercised end to end on any machine.
//!
//! It is not a Content Server and not meant for production use. It can
//! inject faults on a schedule ([`Faults`]) and expire tickets, for tests.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::TryStreamExt;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use crate::embedded::Embedded;
use crate::otcs::{Mapping, Secret};
use crate::types::*;
use crate::{EcmError, ErrorKind, Repository, Result};

/// What a scheduled fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer this status without acting on the request.
    Before(u16),
    /// Act on the request, then answer this status instead (a lost answer).
    After(u16),
    /// Act on the request, then hold the answer this long (a timeout).
    Delay(Duration),
}

/// A scheduled fault: the next `times` requests matching method and path
/// fragment get `action`.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// Only this method (any when `None`).
    pub method: Option<Method>,
    /// Only paths containing this (any when empty).
    pub path_contains: String,
    /// What to do.
    pub action: FaultAction,
    /// How many requests it applies to.
    pub times: u32,
}

/// The fault schedule of a running facade.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<VecDeque<FaultRule>>>,
    injected: Arc<std::sync::atomic::AtomicU64>,
}

impl Faults {
    /// Add a rule at the end of the schedule.
    pub fn push(&self, rule: FaultRule) {
        self.rules.lock().unwrap().push_back(rule);
    }
    /// Remove every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }
    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn take(&self, method: &Method, path: &str) -> Option<FaultAction> {
        let mut rules = self.rules.lock().unwrap();
        let i = rules.iter().position(|r| {
            r.times > 0
                && r.method.as_ref().is_none_or(|m| m == method)
                && (r.path_contains.is_empty() || path.contains(&r.path_contains))
        })?;
        let r = &mut rules[i];
        r.times -= 1;
        let action = r.action.clone();
        if r.times == 0 {
            rules.remove(i);
        }
        self.injected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(action)
    }
}

/// Facade settings.
#[derive(Debug, Clone)]
pub struct FacadeConfig {
    /// Accepted users and their passwords.
    pub users: HashMap<String, Secret>,
    /// Tickets expire after this long without use.
    pub ticket_idle: Duration,
    /// Names ↔ ids, as the clients are configured.
    pub mapping: Mapping,
}

impl Default for FacadeConfig {
    fn default() -> Self {
        FacadeConfig {
            users: HashMap::new(),
            ticket_idle: Duration::from_secs(30 * 60),
            mapping: Mapping::default(),
        }
    }
}

#[derive(Debug)]
struct Draft {
    workflow: String,
    documents: Vec<NodeId>,
}

struct Shared {
    repo: Embedded,
    cfg: FacadeConfig,
    tickets: Mutex<HashMap<String, (String, Instant)>>,
    drafts: Mutex<HashMap<i64, Draft>>,
    next_draft: std::sync::atomic::AtomicI64,
    faults: Faults,
    logins: std::sync::atomic::AtomicU64,
}

type St = Arc<Shared>;

/// A running facade.
pub struct Facade {
    addr: SocketAddr,
    shared: St,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Facade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facade").field("addr", &self.addr).finish()
    }
}

impl Facade {
    /// Serve `repo` on `listen` (use port 0 for any free port).
    pub async fn start(repo: Embedded, cfg: FacadeConfig, listen: SocketAddr) -> Result<Facade> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            repo,
            cfg,
            tickets: Mutex::new(HashMap::new()),
            drafts: Mutex::new(HashMap::new()),
            next_draft: std::sync::atomic::AtomicI64::new(1),
            faults: Faults::default(),
            logins: std::sync::atomic::AtomicU64::new(0),
        });
        let app = router(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "facade stopped");
            }
        });
        Ok(Facade {
            addr,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The REST root to give a client: `http://ADDR/api`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// The fault schedule.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Expire every ticket now (clients must authenticate again).
    pub fn expire_tickets(&self) {
        self.shared.tickets.lock().unwrap().clear();
    }

    /// How many logins succeeded.
    pub fn logins(&self) -> u64 {
        self.shared
            .logins
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stop serving and wait for the server task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Serve until the future `until` completes.
    pub async fn run_until(self, until: impl Future<Output = ()>) {
        until.await;
        self.stop().await;
    }
}

impl Drop for Facade {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn router(st: St) -> Router {
    let api = Router::new()
        .route("/v2/nodes", post(create_node))
        .route("/v2/nodes/{id}", get(get_node).put(update_node).delete(delete_node))
        .route("/v2/nodes/{id}/nodes", get(list_children))
        .route("/v2/nodes/{id}/versions", get(list_versions).post(add_version))
        .route("/v2/nodes/{id}/versions/{n}", get(get_version))
        .route("/v2/nodes/{id}/content", get(content_latest))
        .route("/v2/nodes/{id}/versions/{n}/content", get(content_version))
        .route("/v2/nodes/{id}/categories", get(get_categories).post(add_category))
        .route("/v2/nodes/{id}/categories/{cat}", put(update_category))
        .route("/v2/nodes/{id}/permissions", get(get_permissions))
        .route("/v2/nodes/{id}/permissions/{which}", put(put_permissions).post(post_permissions))
        .route("/v2/nodes/{id}/permissions/custom/{rid}", put(put_custom_permissions))
        .route("/v2/nodes/{id}/audit", get(get_audit))
        .route("/v1/nodes/{id}/rmclassifications", post(rm_classify))
        .route("/v1/nodes/{id}/holds", post(apply_hold))
        .route("/v2/hold", get(find_hold))
        .route("/v2/search", post(search))
        .route("/v2/businessworkspaces", get(find_workspaces).post(create_workspace))
        .route("/v2/draftprocesses", post(create_draft))
        .route("/v2/draftprocesses/{id}", put(initiate_draft))
        .route_layer(middleware::from_fn_with_state(st.clone(), require_ticket))
        .route("/v1/auth", post(auth))
        .route("/v1/ping", get(|| async { axum::Json(json!({})) }))
        .route(
            "/v1/serverinfo",
            get(|| async {
                axum::Json(json!({"serverInfo": {"product": "wharf facade (development and test server)", "version": env!("CARGO_PKG_VERSION")}}))
            }),
        );
    Router::new()
        .nest("/api", api)
        .layer(middleware::from_fn_with_state(st.clone(), inject_faults))
        .layer(DefaultBodyLimit::disable())
        .with_state(st)
}

/// An error answered in Content Server's shape.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": self.1}))).into_response()
    }
}

impl From<EcmError> for ApiError {
    fn from(e: EcmError) -> Self {
        let status = match e.kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::NameCollision | ErrorKind::Invalid | ErrorKind::HeldOrRetained => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::Transient => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::Storage | ErrorKind::Protocol => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.message)
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

type ApiResult = std::result::Result<Response, ApiError>;

fn ok(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

async fn inject_faults(State(st): State<St>, req: Request, next: Next) -> Response {
    let Some(action) = st.faults.take(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    tracing::debug!(?action, path = req.uri().path(), "injecting a fault");
    let fail = |code: u16| {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError(status, format!("injected fault {code}")).into_response()
    };
    match action {
        FaultAction::Before(code) => fail(code),
        FaultAction::After(code) => {
            let resp = next.run(req).await;
            // Drain the answer so the work is complete before failing.
            let _ = axum::body::to_bytes(resp.into_body(), usize::MAX).await;
            fail(code)
        }
        FaultAction::Delay(d) => {
            let resp = next.run(req).await;
            tokio::time::sleep(d).await;
            resp
        }
    }
}

async fn require_ticket(
    State(st): State<St>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let ticket = headers.get("OTCSTicket").and_then(|h| h.to_str().ok());
    let valid = ticket.is_some_and(|t| {
        let mut tickets = st.tickets.lock().unwrap();
        match tickets.get_mut(t) {
            Some((_, last)) if last.elapsed() < st.cfg.ticket_idle => {
                *last = Instant::now();
                true
            }
            Some(_) => {
                tickets.remove(t);
                false
            }
            None => false,
        }
    });
    if !valid {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "Session has expired - please log in again.".into(),
        )
        .into_response();
    }
    next.run(req).await
}

async fn auth(State(st): State<St>, req: Request) -> ApiResult {
    let fields = read_fields(req).await?;
    let user = fields
        .get("username")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let pass = fields
        .get("password")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let good = st.cfg.users.get(&user).is_some_and(|p| {
        // Constant-time comparison keeps timing from hinting at the password.
        let (a, b) = (p.expose().as_bytes(), pass.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    });
    if !good {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "Invalid username or password.".into(),
        ));
    }
    let ticket = hex::encode(rand::random::<[u8; 24]>());
    st.tickets
        .lock()
        .unwrap()
        .insert(ticket.clone(), (user, Instant::now()));
    st.logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut resp = axum::Json(json!({"ticket": ticket})).into_response();
    if let Ok(h) = HeaderValue::from_str(&ticket) {
        resp.headers_mut().insert("OTCSTicket", h);
    }
    Ok(resp)
}

/// Read form fields: urlencoded, with the JSON document in `body` merged in
/// when present (both styles are accepted).
async fn read_fields(req: Request) -> std::result::Result<Map<String, Value>, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), 4 << 20)
        .await
        .map_err(|e| bad(format!("request body: {e}")))?;
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(&bytes).map_err(|e| bad(format!("form: {e}")))?;
    fields_from_pairs(pairs)
}

fn fields_from_pairs(
    pairs: Vec<(String, String)>,
) -> std::result::Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for (k, v) in pairs {
        if k == "body" {
            match serde_json::from_str::<Value>(&v) {
                Ok(Value::Object(m)) => out.extend(m),
                _ => return Err(bad("field body must hold a JSON object")),
            }
        } else {
            out.insert(k, Value::String(v));
        }
    }
    Ok(out)
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn props(n: &Node) -> Value {
    let mut p = json!({
        "id": n.id.0,
        "parent_id": n.parent.map(|p| p.0).unwrap_or(-1),
        "name": n.name,
        "type": n.kind.subtype(),
        "type_name": match n.kind {
            NodeKind::Folder => "Folder",
            NodeKind::Document => "Document",
            NodeKind::Workspace => "Business Workspace",
            NodeKind::Volume => "Enterprise Workspace",
            NodeKind::Other(_) => "Item",
        },
        "description": n.description.clone().unwrap_or_default(),
        "create_date": n.created,
        "modify_date": n.modified,
        "container": n.kind.is_container(),
    });
    if n.kind == NodeKind::Document {
        p["size"] = n.size.unwrap_or(0).into();
        p["mime_type"] = n.mime_type.clone().unwrap_or_default().into();
    }
    p
}

fn list(nodes: &[Node], page: u32, limit: u32, total: u64) -> Value {
    let page_total = total.div_ceil(limit.max(1) as u64).max(1);
    json!({
        "results": nodes.iter().map(|n| json!({"data": {"properties": props(n)}})).collect::<Vec<_>>(),
        "collection": {"paging": {"page": page, "limit": limit, "total_count": total, "page_total": page_total}},
    })
}

fn paging(q: &HashMap<String, String>) -> (u32, u32) {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100u32)
        .clamp(1, 1000);
    let page = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1u32)
        .max(1);
    (page, limit)
}

async fn get_node(State(st): State<St>, Path(id): Path<i64>) -> ApiResult {
    let n = st.repo.node(NodeId(id)).await?;
    ok(json!({"results": {"data": {"properties": props(&n)}}}))
}

async fn list_children(
    State(st): State<St>,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (page, limit) = paging(&q);
    let name = q.get("where_name").cloned();
    let subtype = q.get("where_type").and_then(|t| t.parse().ok());
    let (nodes, total) = st
        .repo
        .children_page(NodeId(id), name, subtype, (page - 1) * limit, limit)
        .await?;
    ok(list(&nodes, page, limit, total))
}

/// Attribute values keyed `{cat}_{attr}` → categories by name.
fn categories_from_ids(
    m: &Mapping,
    cat_id: i64,
    values: &Map<String, Value>,
) -> std::result::Result<Category, ApiError> {
    let (cname, ids) = match m.categories.iter().find(|(_, c)| c.id == cat_id) {
        Some((n, c)) => (n.clone(), Some(c)),
        None => (cat_id.to_string(), None),
    };
    let mut attributes = Vec::new();
    for (k, v) in values {
        let mut parts = k.split('_');
        if parts.next().and_then(|p| p.parse::<i64>().ok()) != Some(cat_id) {
            continue;
        }
        let Some(aid) = parts.next().and_then(|p| p.parse::<i64>().ok()) else {
            continue;
        };
        let aname = ids
            .and_then(|c| {
                c.attributes
                    .iter()
                    .find(|(_, id)| **id == aid)
                    .map(|(n, _)| n.clone())
            })
            .unwrap_or_else(|| aid.to_string());
        let value = AttributeValue::from_json(v)
            .ok_or_else(|| bad(format!("unsupported value for {k}")))?;
        attributes.push(Attribute { name: aname, value });
    }
    Ok(Category {
        name: cname,
        attributes,
    })
}

fn categories_to_json(m: &Mapping, cats: &[Category]) -> Value {
    let mut results = Vec::new();
    for c in cats {
        let ids = m.categories.get(&c.name);
        let cid = ids
            .map(|i| i.id.to_string())
            .unwrap_or_else(|| c.name.clone());
        let mut data = Map::new();
        let mut meta = Map::new();
        meta.insert(cid.clone(), json!({"name": c.name}));
        for a in &c.attributes {
            let aid = ids
                .and_then(|i| i.attributes.get(&a.name))
                .map(|i| i.to_string())
                .unwrap_or_else(|| a.name.clone());
            let key = format!("{cid}_{aid}");
            meta.insert(key.clone(), json!({"name": a.name}));
            data.insert(key, a.value.to_json());
        }
        results.push(json!({"data": {"categories": data}, "metadata": {"categories": meta}}));
    }
    json!({ "results": results })
}

fn roles_categories(
    m: &Mapping,
    fields: &Map<String, Value>,
) -> std::result::Result<Vec<Category>, ApiError> {
    let mut out = Vec::new();
    if let Some(cats) = fields
        .get("roles")
        .and_then(|r| r.get("categories"))
        .and_then(|c| c.as_object())
    {
        for (cid, values) in cats {
            let cid: i64 = cid
                .parse()
                .map_err(|_| bad(format!("bad category id {cid}")))?;
            let values = values
                .as_object()
                .ok_or_else(|| bad("category values must be an object"))?;
            out.push(categories_from_ids(m, cid, values)?);
        }
    }
    Ok(out)
}

async fn create_node(State(st): State<St>, req: Request) -> ApiResult {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("multipart/form-data"));
    if !is_multipart {
        let f = read_fields(req).await?;
        let parent = NodeId(int(f.get("parent_id")).ok_or_else(|| bad("parent_id is required"))?);
        let name = text(f.get("name")).ok_or_else(|| bad("name is required"))?;
        return match int(f.get("type")) {
            Some(0) => {
                let id = st.repo.create_folder(parent, &name).await?;
                ok(
                    json!({"results": {"data": {"properties": props(&st.repo.node(id).await?)}}, "id": id.0}),
                )
            }
            Some(144) => Err(bad("a document needs a file part")),
            other => Err(bad(format!("unsupported node type {other:?}"))),
        };
    }
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|e| bad(e.body_text()))?;
    let mut fields = Map::new();
    while let Some(field) = mp.next_field().await.map_err(|e| bad(e.body_text()))? {
        let fname = field.name().unwrap_or_default().to_string();
        if fname == "file" {
            if int(fields.get("type")) != Some(144) {
                return Err(bad("only documents (type 144) carry a file"));
            }
            let parent =
                NodeId(int(fields.get("parent_id")).ok_or_else(|| bad("parent_id is required"))?);
            let name = text(fields.get("name")).ok_or_else(|| bad("name is required"))?;
            let mime = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_string();
            let cats = roles_categories(&st.cfg.mapping, &fields)?;
            let mut reader =
                tokio_util::io::StreamReader::new(field.map_err(std::io::Error::other));
            let stored = st
                .repo
                .create_from_reader(
                    parent,
                    &name,
                    text(fields.get("description")),
                    &mime,
                    cats,
                    &mut reader,
                )
                .await?;
            let n = st.repo.node(stored.node).await?;
            return ok(json!({"results": {"data": {"properties": props(&n)}}, "id": n.id.0}));
        }
        let value = field.text().await.map_err(|e| bad(e.body_text()))?;
        fields.extend(fields_from_pairs(vec![(fname, value)])?);
    }
    Err(bad("a document needs a file part"))
}

async fn add_version(State(st): State<St>, Path(id): Path<i64>, mut mp: Multipart) -> ApiResult {
    let mut fields = Map::new();
    while let Some(field) = mp.next_field().await.map_err(|e| bad(e.body_text()))? {
        let fname = field.name().unwrap_or_default().to_string();
        if fname == "file" {
            let mime = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_string();
            let file_name = field.file_name().map(str::to_string);
            let mut reader =
                tokio_util::io::StreamReader::new(field.map_err(std::io::Error::other));
            let stored = st
                .repo
                .add_version_from_reader(
                    NodeId(id),
                    file_name,
                    &mime,
                    text(fields.get("description")),
                    &mut reader,
                )
                .await?;
            return ok(json!({"results": {"data": {"version_number": stored.version}}, "id": id}));
        }
        let value = field.text().await.map_err(|e| bad(e.body_text()))?;
        fields.extend(fields_from_pairs(vec![(fname, value)])?);
    }
    Err(bad("a version needs a file part"))
}

fn version_json(v: &Version, node: i64) -> Value {
    json!({"data": {"versions": {
        "id": node,
        "version_number": v.number,
        "file_size": v.size,
        "mime_type": v.mime_type,
        "file_name": v.file_name,
        "create_date": v.created,
        "description": v.description.clone().unwrap_or_default(),
    }}})
}

async fn list_versions(State(st): State<St>, Path(id): Path<i64>) -> ApiResult {
    let vs = st.repo.versions(NodeId(id)).await?;
    ok(json!({"results": vs.iter().map(|v| version_json(v, id)).collect::<Vec<_>>()}))
}

async fn get_version(State(st): State<St>, Path((id, n)): Path<(i64, u32)>) -> ApiResult {
    let vs = st.repo.versions(NodeId(id)).await?;
    let v = vs
        .iter()
        .find(|v| v.number == n)
        .ok_or_else(|| ApiError::from(EcmError::not_found(format!("version {n} of node {id}"))))?;
    ok(json!({"results": version_json(v, id)}))
}

async fn content(st: &St, id: i64, version: Option<u32>) -> ApiResult {
    let vs = st.repo.versions(NodeId(id)).await?;
    let v = match version {
        Some(n) => vs.iter().find(|v| v.number == n),
        None => vs.last(),
    }
    .ok_or_else(|| ApiError::from(EcmError::not_found(format!("content of node {id}"))))?
    .clone();
    let stream = st.repo.download(NodeId(id), Some(v.number)).await?;
    let body = Body::from_stream(stream.map_err(std::io::Error::other));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    if let Ok(m) = HeaderValue::from_str(&v.mime_type) {
        h.insert(header::CONTENT_TYPE, m);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(v.size));
    Ok(resp)
}

async fn content_latest(State(st): State<St>, Path(id): Path<i64>) -> ApiResult {
    content(&st, id, None).await
}

async fn content_version(State(st): State<St>, Path((id, n)): Path<(i64, u32)>) -> ApiResult {
    content(&st, id, Some(n)).await
}

async fn update_node(State(st): State<St>, Path(id): Path<i64>, req: Request) -> ApiResult {
    let f = read_fields(req).await?;
    let n = st
        .repo
        .update_node(
            NodeId(id),
            text(f.get("name")),
            int(f.get("parent_id")).map(NodeId),
        )
        .await?;
    ok(json!({"results": {"data": {"properties": props(&n)}}}))
}

async fn delete_node(State(st): State<St>, Path(id): Path<i64>) -> ApiResult {
    st.repo.delete(NodeId(id)).await?;
    ok(json!({}))
}

async fn get_categories(State(st): State<St>, Path(id): Path<i64>) -> ApiResult {
    let cats = st.repo.categories(NodeId(id)).await?;
    ok(categories_to_json(&st.cfg.mapping, &cats))
}

async fn add_category(State(st): State<St>, Path(id): Path<i64>, req: Request) -> ApiResult {
    let f = read_fields(req).await?;
    let cid = int(f.get("category_id")).ok_or_else(|| bad("category_id is required"))?;
    let cat = categories_from_ids(&st.cfg.mapping, cid, &f)?;
    st.repo.set_categories(NodeId(id), &[cat]).await?;
    ok(json!({}))
}

async fn update_category(
    State(st): State<St>,
    Path((id, cid)): Path<(i64, i64)>,
    req: Request,
) -> ApiResult {
    let f = read_fields(req).await?;
    let cat = categories_from_ids(&st.cfg.mapping, cid, &f)?;
    st.repo.set_categories(NodeId(id), &[cat]).await?;
    ok(json!({}))
}

fn rights_of(f: &Map<String, Value>) -> std::result::Result<Vec<Right>, ApiError> {
    f.get("permissions")
        .and_then(|p| p.as_array())
        .ok_or_else(|| bad("permissions must be a list"))?
        .iter()
        .map(|r| {
            r.as_str()
                .and_then(Right::parse)
                .ok_or_else(|| bad(format!("unknown permission {r}")))
        })
        .collect()
}

fn principal_for(m: &Mapping, rid: i64) -> Principal {
    if let Some((n, _)) = m.groups.iter().find(|(_, id)| **id == rid) {
        return Principal::Group(n.clone());
    }
    match m.users.iter().find(|(_, id)| **id == rid) {
        Some((n, _)) => Principal::User(n.clone()),
        None => Principal::User(rid.to_string()),
    }
}

fn right_id_for(m: &Mapping, p: &Principal) -> Option<i64> {
    match p {
        Principal::User(n) => m.users.get(n).copied().or_else(|| n.parse().ok()),
        Principal::Group(n) => m.groups.get(n).copied().or_else(|| n.parse().ok()),
        _ => None,
    }
}

async fn get_permissions(State(st): State<St>, Path(id): Path<i64>) -> ApiResult {
    let grants = st.repo.permissions(NodeId(id)).await?;
    let mut results = Vec::new();
    for g in &grants {
        let rights: Vec<&str> = g.rights.iter().map(|r| r.as_str()).collect();
        let (ty, rid) = match &g.principal {
            Principal::Owner => ("owner", None),
            Principal::OwnerGroup => ("group", None),
            Principal::Public => ("public", None),
            p => ("custom", right_id_for(&st.cfg.mapping, p)),
        };
        results.push(
            json!({"data": {"permissions": {"permissions": rights, "right_id": rid, "type": ty}}}),
        );
    }
    ok(json!({ "results": results }))
}

async fn put_permissions(
    State(st): State<St>,
    Path((id, which)): Path<(i64, String)>,
    req: Request,
) -> ApiResult {
    let f = read_fields(req).await?;
    let principal = match which.as_str() {
        "owner" => Principal::Owner,
        "group" => Principal::OwnerGroup,
        "public" => Principal::Public,
        other => return Err(bad(format!("unknown permission owner {other}"))),
    };
    let rights = rights_of(&f)?;
    st.repo
        .set_permissions(NodeId(id), &[Grant { principal, rights }])
        .await?;
    ok(json!({}))
}

async fn post_permissions(
    State(st): State<St>,
    Path((id, which)): Path<(i64, String)>,
    req: Request,
) -> ApiResult {
    if which != "custom" {
        return put_permissions(State(st), Path((id, which)), req).await;
    }
    let f = read_fields(req).await?;
    let rid = int(f.get("right_id")).ok_or_else(|| bad("right_id is required"))?;
    let existing = st.repo.permissions(NodeId(id)).await?;
    let principal = principal_for(&st.cfg.mapping, rid);
    if existing.iter().any(|g| g.principal == principal) {
        return Err(bad(format!("right {rid} already exists on node {id}")));
    }
    let rights = rights_of(&f)?;
    st.repo
        .set_permissions(NodeId(id), &[Grant { principal, rights }])
        .await?;
    ok(json!({}))
}

async fn put_custom_permissions(
    State(st): State<St>,
    Path((id, rid)): Path<(i64, i64)>,
    req: Request,
) -> ApiResult {
    let f = read_fields(req).await?;
    let rights = rights_of(&f)?;
    let principal = principal_for(&st.cfg.mapping, rid);
    st.repo
        .set_permissions(NodeId(id), &[Grant { principal, rights }])
        .await?;
    ok(json!({}))
}

async fn get_audit(State(st): State<St>, Path(id): Path<i64>) -> ApiResult {
    let events = st.repo.audit(Some(NodeId(id))).await?;
    let results: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({"data": {"audit": {
                "id": e.id,
                "audit_date": e.at,
                "audit_name": e.event.action,
                "user_name": e.event.actor,
                "value1": e.event.detail,
                "sha256": e.event.sha256,
            }}})
        })
        .collect();
    ok(json!({ "results": results }))
}

async fn rm_classify(State(st): State<St>, Path(id): Path<i64>, req: Request) -> ApiResult {
    let f = read_fields(req).await?;
    let cid = int(f.get("class_id")).ok_or_else(|| bad("class_id is required"))?;
    let code = st
        .cfg
        .mapping
        .rm_classes
        .iter()
        .find(|(_, v)| **v == cid)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| cid.to_string());
    st.repo.classify(NodeId(id), &code).await?;
    ok(json!({}))
}

async fn find_hold(State(st): State<St>, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let name = q
        .get("holdname")
        .ok_or_else(|| bad("holdname is required"))?;
    // A development server creates holds on first use.
    let id = st.repo.hold_id(name, true).await?.unwrap_or_default();
    ok(json!({"results": [{"data": {"hold": {"id": id, "name": name}}}]}))
}

async fn apply_hold(State(st): State<St>, Path(id): Path<i64>, req: Request) -> ApiResult {
    let f = read_fields(req).await?;
    let hid = int(f.get("hold_id")).ok_or_else(|| bad("hold_id is required"))?;
    let name = st.repo.hold_name(hid).await?;
    st.repo.apply_hold(NodeId(id), &name).await?;
    ok(json!({}))
}

/// Parse the query-language subset the client sends:
/// `OTSubType:144 AND OTName:"x*" AND "Cat:Attr":"value"`.
fn parse_where(w: &str) -> std::result::Result<SearchQuery, ApiError> {
    let mut q = SearchQuery::default();
    let chars: Vec<char> = w.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> std::result::Result<String, ApiError> {
        let mut out = String::new();
        if chars.get(*i) == Some(&'"') {
            *i += 1;
            loop {
                match chars.get(*i) {
                    None => return Err(bad("unterminated quote in where")),
                    Some('\\') => {
                        out.extend(chars.get(*i + 1));
                        *i += 2;
                    }
                    Some('"') => {
                        *i += 1;
                        return Ok(out);
                    }
                    Some(c) => {
                        out.push(*c);
                        *i += 1;
                    }
                }
            }
        }
        while let Some(c) = chars.get(*i) {
            if c.is_whitespace() || *c == ':' {
                break;
            }
            out.push(*c);
            *i += 1;
        }
        Ok(out)
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let field = token(&mut i)?;
        if field == "AND" {
            continue;
        }
        if chars.get(i) != Some(&':') {
            return Err(bad(format!("expected ':' after {field:?} in where")));
        }
        i += 1;
        let value = token(&mut i)?;
        match field.as_str() {
            "OTSubType" => {
                if value != "144" {
                    return Err(bad("only documents (OTSubType:144) are searchable here"));
                }
            }
            "OTName" => q.name = Some(value),
            f => {
                let (c, a) = f
                    .split_once(':')
                    .ok_or_else(|| bad(format!("unsupported search field {f:?}")))?;
                q.attributes.push(AttributeFilter {
                    category: c.to_string(),
                    attribute: a.to_string(),
                    value,
                });
            }
        }
    }
    Ok(q)
}

async fn search(State(st): State<St>, req: Request) -> ApiResult {
    let f = read_fields(req).await?;
    let w = text(f.get("where")).ok_or_else(|| bad("where is required"))?;
    let mut q = parse_where(&w)?;
    q.location = int(f.get("location_id")).map(NodeId);
    let limit = int(f.get("limit")).unwrap_or(10).clamp(1, 1000) as u32;
    let page = int(f.get("page")).unwrap_or(1).max(1) as u32;
    let (nodes, total) = st.repo.search_page(&q, (page - 1) * limit, limit).await?;
    ok(list(&nodes, page, limit, total))
}

fn ws_type_name(m: &Mapping, id: i64) -> String {
    m.workspace_types
        .iter()
        .find(|(_, v)| **v == id)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| id.to_string())
}

async fn find_workspaces(
    State(st): State<St>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let t = q
        .get("where_workspace_type_id")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad("where_workspace_type_id is required"))?;
    let b = q
        .get("where_bo_id")
        .ok_or_else(|| bad("where_bo_id is required"))?;
    let found = st
        .repo
        .find_workspace(&ws_type_name(&st.cfg.mapping, t), b)
        .await?;
    let nodes: Vec<Node> = found.into_iter().collect();
    let total = nodes.len() as u64;
    ok(list(&nodes, 1, 100, total))
}

async fn create_workspace(State(st): State<St>, req: Request) -> ApiResult {
    let f = read_fields(req).await?;
    let t = int(f.get("wksp_type_id")).ok_or_else(|| bad("wksp_type_id is required"))?;
    let spec = WorkspaceSpec {
        workspace_type: ws_type_name(&st.cfg.mapping, t),
        business_id: text(f.get("bo_id")).ok_or_else(|| bad("bo_id is required"))?,
        name: text(f.get("name")).ok_or_else(|| bad("name is required"))?,
    };
    let parent = NodeId(int(f.get("parent_id")).unwrap_or(NodeId::ENTERPRISE.0));
    let id = st.repo.create_workspace(parent, &spec).await?;
    ok(json!({"results": {"id": id.0}}))
}

async fn create_draft(State(st): State<St>, req: Request) -> ApiResult {
    let f = read_fields(req).await?;
    let map = int(f.get("workflow_id")).ok_or_else(|| bad("workflow_id is required"))?;
    let workflow = st
        .cfg
        .mapping
        .workflows
        .iter()
        .find(|(_, v)| **v == map)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| map.to_string());
    let mut documents = Vec::new();
    for d in text(f.get("doc_ids"))
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.trim().is_empty())
    {
        let id = NodeId(
            d.trim()
                .parse()
                .map_err(|_| bad(format!("bad document id {d:?}")))?,
        );
        st.repo.node(id).await?;
        documents.push(id);
    }
    let draft = st
        .next_draft
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    st.drafts.lock().unwrap().insert(
        draft,
        Draft {
            workflow,
            documents,
        },
    );
    ok(json!({"results": {"draftprocess_id": draft, "workflow_type": "1_1"}}))
}

async fn initiate_draft(State(st): State<St>, Path(id): Path<i64>, req: Request) -> ApiResult {
    let f = read_fields(req).await?;
    if text(f.get("action")).as_deref() != Some("Initiate") {
        return Err(bad("only the Initiate action is supported"));
    }
    let draft = st
        .drafts
        .lock()
        .unwrap()
        .remove(&id)
        .ok_or_else(|| ApiError::from(EcmError::not_found(format!("draft process {id}"))))?;
    let comment = text(f.get("comment")).unwrap_or_default();
    let (title, body) = match comment.split_once("\n\n") {
        Some((t, b)) => (t.to_string(), b.to_string()),
        None => (String::new(), comment),
    };
    let wf = st
        .repo
        .start_workflow(&WorkflowStart {
            workflow: draft.workflow,
            title,
            comment: body,
            assignee: None,
            documents: draft.documents,
        })
        .await?;
    ok(json!({"results": {"process_id": wf.0}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_query_subset() {
        let q =
            parse_where(r#"OTSubType:144 AND OTName:"INV_*" AND "Invoice:Status":"Appr \"x\"""#)
                .unwrap();
        assert_eq!(q.name.as_deref(), Some("INV_*"));
        assert_eq!(q.attributes.len(), 1);
        assert_eq!(q.attributes[0].category, "Invoice");
        assert_eq!(q.attributes[0].attribute, "Status");
        assert_eq!(q.attributes[0].value, "Appr \"x\"");
        assert!(parse_where("OTName").is_err());
        assert!(parse_where("OTSubType:0").is_err());
    }

    #[test]
    fn client_queries_round_trip() {
        let q = SearchQuery {
            location: None,
            name: Some("a\"b*".into()),
            attributes: vec![AttributeFilter {
                category: "C".into(),
                attribute: "A".into(),
                value: "v:1".into(),
            }],
            limit: None,
        };
        let parsed = parse_where(&crate::otcs::query_text(&q)).unwrap();
        assert_eq!(parsed.name, q.name);
        assert_eq!(parsed.attributes, q.attributes);
    }
}
