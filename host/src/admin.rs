//! The admin HTTP endpoint of `wharf run`: liveness, readiness, metrics
//! and the partners' plugin builds.
//!
//! - `GET /healthz`: 200 `ok` while the process serves requests.
//! - `GET /readyz`: 200 when [`Health::is_ready`], else 503; the JSON body
//!   also holds each partner's last poll outcome.
//! - `GET /metrics`: [`Metrics::encode`] as OpenMetrics text.
//!
//! With a running service ([`serve_runtime`]), also:
//!
//! - `GET /plugins`: every partner's running build (name, version, digest,
//!   since when, how and by whom) and its last refused build.
//! - `GET /plugins/{partner}/history`: the builds that became active and
//!   the refused ones, newest first.
//! - `POST /plugins/{partner}/deploy`: the body is a component (at most
//!   [`MAX_BUILD_BYTES`]); it is checked, installed in the plugins folder
//!   and swapped in (200), or refused (422) while the old build keeps
//!   serving.
//! - `POST /plugins/{partner}/rollback[?to=<digest>]`: the same with a
//!   build the partner ran before (default: the one before the current).
//!
//! The two `POST` routes need `Authorization: Bearer <admin token>`
//! (`runtime.admin_token_env` / `admin_token_file`): 401 without it or with
//! another token, 403 when the service has no token configured. Errors are
//! JSON: `{"error": "..."}`.
//!
//! Other paths answer 404 (and other methods on these paths 405).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::RuntimeConfig;
use crate::metrics::Metrics;
use crate::plugin::store::{Activation, Refusal};
use crate::runtime::{ADMIN_ACTOR, ChangeError, Runtime};

/// Content type of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Readiness of the service and the last poll outcome of each partner.
///
/// Share one value in an `Arc`; every method takes `&self`.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    partners: Mutex<BTreeMap<String, PartnerStatus>>,
}

#[derive(Debug, Clone)]
struct PartnerStatus {
    at: SystemTime,
    error: Option<String>,
}

/// Body of `/readyz`.
#[derive(Serialize)]
struct Readiness {
    ready: bool,
    partners: BTreeMap<String, PartnerJson>,
}

#[derive(Serialize)]
struct PartnerJson {
    ok: bool,
    at: String,
    error: Option<String>,
}

impl Health {
    /// Creates a health record that is not ready and knows no partner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the service ready (or no longer ready) to do its work.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the service is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records the outcome of a partner's latest poll, stamped with the
    /// current time. The error text is shown as is on `/readyz`, so it must
    /// not contain secrets.
    pub fn set_partner(&self, partner: &str, status: Result<(), String>) {
        let status = PartnerStatus {
            at: SystemTime::now(),
            error: status.err(),
        };
        self.lock().insert(partner.to_owned(), status);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PartnerStatus>> {
        // The map is always consistent, so a panic elsewhere does not spoil it.
        self.partners.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn readiness(&self) -> Readiness {
        let partners = self
            .lock()
            .iter()
            .map(|(name, s)| {
                let json = PartnerJson {
                    ok: s.error.is_none(),
                    at: humantime::format_rfc3339_millis(s.at).to_string(),
                    error: s.error.clone(),
                };
                (name.clone(), json)
            })
            .collect();
        Readiness {
            ready: self.is_ready(),
            partners,
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The largest build `POST /plugins/{partner}/deploy` accepts.
pub const MAX_BUILD_BYTES: usize = 64 * 1024 * 1024;

/// The bearer token of the admin endpoint's deploy and rollback routes.
/// It is compared in constant time and never shown: `Debug` hides it.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(hidden)")
    }
}

impl AdminToken {
    /// A token; surrounding white space (a file's final newline) is
    /// dropped. Fails when nothing is left.
    pub fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.is_empty() {
            return Err("the admin token is empty".into());
        }
        Ok(AdminToken(Arc::from(token)))
    }

    /// The token `runtime.admin_token_env` or `runtime.admin_token_file`
    /// names, or `None` when neither is set. Errors never contain the
    /// token.
    pub fn from_config(runtime: &RuntimeConfig) -> Result<Option<Self>, String> {
        if let Some(var) = &runtime.admin_token_env {
            let value = std::env::var(var).map_err(|_| {
                format!("runtime.admin_token_env: the environment variable {var} is not set")
            })?;
            return Self::new(&value)
                .map(Some)
                .map_err(|e| format!("runtime.admin_token_env ({var}): {e}"));
        }
        if let Some(file) = &runtime.admin_token_file {
            let value = std::fs::read_to_string(file).map_err(|e| {
                format!(
                    "runtime.admin_token_file: cannot read {}: {e}",
                    file.display()
                )
            })?;
            return Self::new(&value)
                .map(Some)
                .map_err(|e| format!("runtime.admin_token_file ({}): {e}", file.display()));
        }
        Ok(None)
    }

    /// Whether `given` is this token, in time independent of where they
    /// differ (both are hashed to the same length first).
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (
            Sha256::digest(self.0.as_bytes()),
            Sha256::digest(given.as_bytes()),
        );
        let diff = a
            .iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(diff) == 0
    }
}

fn base_routes(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { metrics, health })
}

async fn serve_app(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves the admin endpoint on `listener` until `shutdown` completes, then
/// lets requests in progress finish and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_app(listener, base_routes(metrics, health), shutdown).await
}

/// Serves the admin endpoint of a running service: the routes of
/// [`serve`] plus the plugin routes. Without `token`, deploy and rollback
/// are refused (403).
pub async fn serve_runtime(
    listener: tokio::net::TcpListener,
    runtime: Arc<Runtime>,
    token: Option<AdminToken>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = base_routes(runtime.metrics().clone(), runtime.health().clone())
        .merge(plugin_routes(PluginState { runtime, token }));
    serve_app(listener, app, shutdown).await
}

#[derive(Clone)]
struct PluginState {
    runtime: Arc<Runtime>,
    token: Option<AdminToken>,
}

fn plugin_routes(state: PluginState) -> Router {
    let changes = Router::new()
        .route(
            "/plugins/{partner}/deploy",
            post(deploy).layer(DefaultBodyLimit::max(MAX_BUILD_BYTES)),
        )
        .route("/plugins/{partner}/rollback", post(rollback))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/plugins", get(plugins))
        .route("/plugins/{partner}/history", get(history))
        .merge(changes)
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": message.into()})),
    )
        .into_response()
}

/// At most this much of a refused request's body is read before the
/// refusal is sent, and for at most [`DRAIN_TIME`].
const DRAIN_BYTES: usize = 4 << 20;

/// See [`DRAIN_BYTES`].
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Lets a request through only with the configured bearer token. Runs
/// before the body is read; a refused request's body is read (within
/// [`DRAIN_BYTES`] and [`DRAIN_TIME`]) and dropped, so a client still
/// sending it receives the refusal rather than a reset connection.
async fn authorize(State(state): State<PluginState>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let response = match (&state.token, given) {
        (None, _) => error(
            StatusCode::FORBIDDEN,
            "no admin token configured: set runtime.admin_token_env or runtime.admin_token_file and restart the service",
        ),
        (Some(_), None) => {
            unauthorized("an admin token is required (Authorization: Bearer <token>)")
        }
        (Some(token), Some(given)) if !token.matches(given) => {
            tracing::warn!(path = %request.uri().path(), "admin request with a wrong token refused");
            unauthorized("wrong admin token")
        }
        (Some(_), Some(_)) => return next.run(request).await,
    };
    let _ = tokio::time::timeout(
        DRAIN_TIME,
        axum::body::to_bytes(request.into_body(), DRAIN_BYTES),
    )
    .await;
    response
}

/// A 401 refusal asking for a bearer token.
fn unauthorized(message: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn at(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn activation_json(a: &Activation) -> serde_json::Value {
    serde_json::json!({
        "digest": a.digest,
        "name": a.name,
        "version": a.version,
        "at": at(a.at),
        "how": a.how,
        "actor": a.actor,
    })
}

fn refusal_json(r: &Refusal) -> serde_json::Value {
    serde_json::json!({
        "digest": r.digest,
        "at": at(r.at),
        "how": r.how,
        "actor": r.actor,
        "reason": r.reason,
    })
}

fn change_error(e: ChangeError) -> Response {
    let status = match &e {
        ChangeError::UnknownPartner(_) | ChangeError::UnknownBuild { .. } => StatusCode::NOT_FOUND,
        ChangeError::NotRunning { .. } | ChangeError::NoEarlierBuild(_) => StatusCode::CONFLICT,
        ChangeError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ChangeError::BadDigest(_) => StatusCode::BAD_REQUEST,
        ChangeError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

async fn plugins(State(state): State<PluginState>) -> Response {
    let runtime = state.runtime.clone();
    let status = match tokio::task::spawn_blocking(move || runtime.plugin_status()).await {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let partners: Vec<serde_json::Value> = status
        .iter()
        .map(|s| {
            let active = s.active.as_ref().map(|b| {
                let a = s.activation.as_ref();
                serde_json::json!({
                    "name": b.name,
                    "version": b.version,
                    "digest": b.digest,
                    "since": a.map(|a| at(a.at)),
                    "how": a.map(|a| a.how),
                    "actor": a.map(|a| &a.actor),
                })
            });
            serde_json::json!({
                "partner": s.partner,
                "running": s.active.is_some(),
                "active": active,
                "unavailable": s.unavailable,
                "last_refusal": s.last_refusal.as_ref().map(refusal_json),
            })
        })
        .collect();
    axum::Json(serde_json::json!({"partners": partners})).into_response()
}

async fn history(State(state): State<PluginState>, Path(partner): Path<String>) -> Response {
    let runtime = state.runtime.clone();
    let id = partner.clone();
    let found = match tokio::task::spawn_blocking(move || runtime.plugin_history(&id)).await {
        Ok(found) => found,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let (history, refusals) = match found {
        Ok(found) => found,
        Err(e) => return change_error(e),
    };
    let active = state
        .runtime
        .partners()
        .iter()
        .find(|r| r.inbound.partner().id == partner)
        .map(|r| r.inbound.plugin().digest().to_string());
    axum::Json(serde_json::json!({
        "partner": partner,
        "active": active,
        "history": history.iter().map(activation_json).collect::<Vec<_>>(),
        "refusals": refusals.iter().map(refusal_json).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn deploy(
    State(state): State<PluginState>,
    Path(partner): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if body.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the request body must be the component (.wasm)",
        );
    }
    match state
        .runtime
        .deploy_plugin(&partner, body.to_vec(), ADMIN_ACTOR)
        .await
    {
        Ok(change) => axum::Json(change).into_response(),
        Err(e) => change_error(e),
    }
}

/// Query of `POST /plugins/{partner}/rollback`.
#[derive(serde::Deserialize)]
struct RollbackQuery {
    to: Option<String>,
}

async fn rollback(
    State(state): State<PluginState>,
    Path(partner): Path<String>,
    Query(query): Query<RollbackQuery>,
) -> Response {
    match state
        .runtime
        .rollback_plugin(&partner, query.to.as_deref(), ADMIN_ACTOR)
        .await
    {
        Ok(change) => axum::Json(change).into_response(),
        Err(e) => change_error(e),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let body = state.health.readiness();
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        state.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tokens_compare_whole_and_stay_hidden() {
        let token = AdminToken::new("  s3cret-token\n").unwrap();
        assert!(token.matches("s3cret-token"));
        assert!(!token.matches("s3cret-toke"));
        assert!(!token.matches("s3cret-token2"));
        assert!(!token.matches(""));
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(AdminToken::new(" \n").is_err());
    }

    #[test]
    fn the_token_comes_from_the_named_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let mut runtime = RuntimeConfig::default();
        assert!(AdminToken::from_config(&runtime).unwrap().is_none());
        runtime.admin_token_file = Some(file.clone());
        let token = AdminToken::from_config(&runtime).unwrap().unwrap();
        assert!(token.matches("from-a-file"));
        std::fs::write(&file, "\n").unwrap();
        let e = AdminToken::from_config(&runtime).unwrap_err();
        assert!(e.contains("empty"), "{e}");
        runtime.admin_token_file = None;
        runtime.admin_token_env = Some("WHARF_TEST_TOKEN_NEVER_SET".into());
        let e = AdminToken::from_config(&runtime).unwrap_err();
        assert!(e.contains("WHARF_TEST_TOKEN_NEVER_SET is not set"), "{e}");
    }

    #[tokio::test]
    async fn routes_readiness_and_shutdown() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            metrics.clone(),
            health.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = |path: &str| client.get(format!("{base}{path}")).send();

        let r = get("/healthz").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");

        let r = get("/readyz").await.unwrap();
        assert_eq!(r.status(), 503);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"ready": false, "partners": {}}));

        health.set_partner("acme", Ok(()));
        health.set_partner("globex", Err("connection refused".into()));
        health.set_ready(true);
        let r = get("/readyz").await.unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["ready"], true);
        assert_eq!(body["partners"]["acme"]["ok"], true);
        assert_eq!(body["partners"]["acme"]["error"], serde_json::Value::Null);
        assert_eq!(body["partners"]["globex"]["ok"], false);
        assert_eq!(body["partners"]["globex"]["error"], "connection refused");
        let at = body["partners"]["acme"]["at"].as_str().unwrap();
        let at = humantime::parse_rfc3339(at).unwrap();
        let age = SystemTime::now().duration_since(at).unwrap();
        assert!(age < Duration::from_secs(60), "{age:?}");

        health.set_ready(false);
        assert_eq!(get("/readyz").await.unwrap().status(), 503);

        metrics.failure("acme", "remote");
        let r = get("/metrics").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CONTENT_TYPE], OPENMETRICS);
        let text = r.text().await.unwrap();
        assert!(text.contains(r#"wharf_failures_total{partner="acme",kind="remote"} 1"#));
        assert!(text.ends_with("# EOF\n"));

        assert_eq!(get("/").await.unwrap().status(), 404);
        assert_eq!(get("/metrics/extra").await.unwrap().status(), 404);
        let r = client.post(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 405);

        // The client still holds an idle keep-alive connection; shutdown
        // must not wait for it.
        stop.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("serve did not return after shutdown")
            .unwrap();
        result.unwrap();
        assert!(get("/healthz").await.is_err());
    }
}
