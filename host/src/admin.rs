//! The admin HTTP endpoint of `wharf run`: liveness, readiness and metrics.
//!
//! - `GET /healthz`: 200 `ok` while the process serves requests.
//! - `GET /readyz`: 200 when [`Health::is_ready`], else 503; the JSON body
//!   also holds each partner's last poll outcome.
//! - `GET /metrics`: [`Metrics::encode`] as OpenMetrics text.
//!
//! Other paths answer 404 (and other methods on these paths 405).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::metrics::Metrics;

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

/// Serves the admin endpoint on `listener` until `shutdown` completes, then
/// lets requests in progress finish and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { metrics, health });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
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
