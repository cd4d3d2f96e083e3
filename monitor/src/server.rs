//! The HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` and the JSON API
//! (`/api/devices`, `/api/devices/{mac}/destinations`).
//!
//! Handlers only render what the poller already published: no syscall on the scrape path.

use std::{
    future::Future,
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::{metrics::SharedMetrics, state::Shared};

#[derive(Clone)]
struct AppState {
    metrics: SharedMetrics,
    shared: Shared,
    /// A poll older than this makes `/healthz` fail.
    stale_after: Duration,
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: SharedMetrics,
    shared: Shared,
    poll_interval: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState {
        metrics,
        shared,
        stale_after: poll_interval * 3 + Duration::from_secs(5),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/api/devices", get(api_devices))
        .route("/api/devices/{mac}/destinations", get(api_destinations))
        .route("/", get(index))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    // Rendering 100k series takes tens of milliseconds of CPU: keep it off the async workers.
    let metrics = state.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("rendering failed: {e}\n"),
        ),
    }
}

/// 200 when the last poll is recent, 503 otherwise (the kernel maps cannot be read, or the
/// poller is stuck): a liveness check for systemd, procd or a load balancer.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let last = state.shared.read().expect("state lock").last_poll;
    let age = last.and_then(|t| SystemTime::now().duration_since(t).ok());
    match age {
        Some(age) if age <= state.stale_after => (StatusCode::OK, "ok\n".to_owned()),
        Some(age) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stale: last poll {:.1}s ago\n", age.as_secs_f64()),
        ),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no poll yet\n".to_owned()),
    }
}

async fn index() -> &'static str {
    "egress-monitor: see /metrics, /healthz, /api/devices and /api/devices/{mac}/destinations\n"
}

fn json_response(status: StatusCode, body: serde_json::Value) -> impl IntoResponse {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string() + "\n",
    )
}

async fn api_devices(State(state): State<AppState>) -> impl IntoResponse {
    let body = crate::api::devices(&state.shared.read().expect("state lock"));
    json_response(StatusCode::OK, body)
}

async fn api_destinations(
    State(state): State<AppState>,
    Path(mac): Path<String>,
) -> impl IntoResponse {
    let result = crate::api::destinations(&state.shared.read().expect("state lock"), &mac);
    match result {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => json_response(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            e.body(),
        ),
    }
}
